"""The SFU process never decodes: a real call through an SFU running in its own process,
which afterwards reports that no codec library (PyAV, aiortc, OpenCV) was ever imported
in it, so no decoder or encoder object can have existed."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from visavis.client.sfu_session import PatternTrack, SfuSession, ToneTrack
from visavis.tokens import sign_token

pytestmark = pytest.mark.interop


async def test_sfu_process_loads_no_codec(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        VISAVIS_SHARED_SECRET="no-decode-secret",
        VISAVIS_DATA_DIR=str(tmp_path),
        VISAVIS_SFU__PORT="0",
        VISAVIS_SFU__MEDIA_PORT="0",
        VISAVIS_SFU__TCP_PORT="0",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "visavis.sfu",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    sessions: list[SfuSession] = []
    try:
        assert proc.stdout is not None and proc.stdin is not None
        ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
        for index, user in enumerate(["alice", "bob", "carol"]):
            claims = {"room": "r", "call": "c", "user": user, "device": "d"}
            token = sign_token("no-decode-secret", claims, now=time.time(), ttl=60)
            session = SfuSession(
                ready["control_url"], token, audio=ToneTrack(0.5), video=PatternTrack(seed=index)
            )
            sessions.append(session)
            await session.join()
        for s in sessions:
            others = [o.participant_id or "" for o in sessions if o is not s]
            await s.wait_for(
                lambda s=s, others=others: all(
                    s.frames[o]["video"] >= 5 and s.frames[o]["audio"] >= 5 for o in others
                ),
                20,
            )
        for s in sessions:
            await s.close()
        proc.stdin.write(b"stop\n")
        await proc.stdin.drain()
        report = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
        assert report["packets_forwarded"] > 100
        assert report["decoder_modules"] == []
    finally:
        for s in sessions:
            await s.close()
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
