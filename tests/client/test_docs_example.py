"""The bot of docs/client.md, run as written (server address and host addresses swapped in)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from fractions import Fraction
from pathlib import Path

import av

from visavis.client.media import MediaSource, TestPatternTrack

from .conftest import Stack

DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"


def bot_source(server: str) -> str:
    text = DOC.read_text()
    section = text.split("## A bot that answers and plays a file", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    source = code.group(1)
    source = source.replace('SERVER = "http://127.0.0.1:8080"', f'SERVER = "{server}"')
    assert "signup=True)" in source
    return source.replace("signup=True)", "signup=True, host_addresses=['127.0.0.1'])")


def write_greeting(path: Path) -> None:
    track = TestPatternTrack(160, 120, 15)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=15)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 15)
        for index in range(45):
            frame = track.frame_at(index)
            frame.pts, frame.time_base = index, Fraction(1, 15)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


async def test_bot_example_answers_and_plays_a_file(stack: Stack, tmp_path: Path) -> None:
    write_greeting(tmp_path / "greeting.mp4")
    (tmp_path / "bot.py").write_text(bot_source(stack.url))
    bot = await asyncio.create_subprocess_exec(
        sys.executable,
        "bot.py",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert bot.stdout is not None
        line = await asyncio.wait_for(bot.stdout.readline(), 20)
        assert line.decode().startswith("ready: call bot@example.com"), line
        alice = await stack.user("alice")
        call = await alice.call("bot@example.com", MediaSource.test_pattern(160, 120))
        await call.wait_connected(15)
        await call.wait_frames(10, within=10)  # the bot's file, decoded here
        assert (call.received.width, call.received.height) == (160, 120)
        # Let the bot record: 15 more of its frames (about a second of its own clock, so a
        # starved bot gets longer) arrive while it receives ours.
        await call.wait_frames(call.received.video_frames + 15, within=30)
        await call.hangup()
        seen = b""
        while b"ended: remote_hangup" not in seen:
            seen += await asyncio.wait_for(bot.stdout.readline(), 10)
        assert b"connected: connected |" in seen
    finally:
        bot.terminate()
        await bot.wait()
    with av.open(str(tmp_path / "caller.mp4")) as recording:
        assert sum(1 for _ in recording.decode(video=0)) >= 5
