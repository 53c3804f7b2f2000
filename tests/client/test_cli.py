"""``visavis call`` and ``visavis answer`` as a person runs them, against loopback servers."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import av

from .conftest import PASSWORD, Stack, signup

CLI = [sys.executable, "-c", "from visavis.cli import main; main()"]


async def run_cli(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *CLI, *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


async def finish(proc: asyncio.subprocess.Process, within: float = 120) -> tuple[int, Any, str]:
    # A budget, not a wait: the process ends as soon as its call does. Two CLI processes
    # importing the media stack on a loaded 2-core machine took over 40 s.
    out, err = await asyncio.wait_for(proc.communicate(), within)
    text = out.decode().strip()
    summary = json.loads(text.splitlines()[-1]) if text else None
    assert proc.returncode is not None
    return proc.returncode, summary, err.decode()


async def wait_for_line(proc: asyncio.subprocess.Process, text: str, within: float = 60) -> str:
    """Read the process's stderr until a line contains ``text``; return what was read."""
    assert proc.stderr is not None
    seen: list[str] = []
    async with asyncio.timeout(within):
        while not seen or text not in seen[-1]:
            line = await proc.stderr.readline()
            if not line:
                raise AssertionError(f"exited before printing {text!r}: {''.join(seen)}")
            seen.append(line.decode())
    return "".join(seen)


async def test_call_and_answer_from_the_terminal(stack: Stack, tmp_path: Path) -> None:
    await signup(stack.url, "alice@example.com")
    await signup(stack.url, "bob@example.com")
    common = ["--server", stack.url, "--password", PASSWORD, "--host-address", "127.0.0.1",
              "--size", "160x120", "--json", "--identity-dir", str(tmp_path / "keys")]
    recording = tmp_path / "from-alice.mp4"
    answering = await run_cli("answer", "--user", "bob@example.com", "--wait", "20",
                              "--record", str(recording), *common)
    ready = await wait_for_line(answering, "waiting for a call")  # signed in, listening
    calling = await run_cli("call", "bob@example.com", "--user", "alice@example.com",
                            "--duration", "3", *common)
    (rc_call, call, err_call), (rc_answer, ans, err_answer) = await asyncio.gather(
        finish(calling), finish(answering)
    )
    err_answer = ready + err_answer
    assert rc_call == 0, err_call
    assert rc_answer == 0, err_answer
    assert call["reason"] == "hangup" and ans["reason"] == "remote_hangup"
    # Signed fingerprints were checked both ways: the same code, and each account's
    # identity key is kept (private, 0600) for the next call.
    assert call["verification_code"] and call["verification_code"] == ans["verification_code"]
    assert "verification code " + call["verification_code"] in err_call
    for handle in ("alice@example.com", "bob@example.com"):
        key = tmp_path / "keys" / handle / "identity.pem"
        assert key.stat().st_mode & 0o777 == 0o600
    for summary in (call, ans):
        assert summary["path_kind"] == "host"
        assert summary["frames_decoded"] >= 15
        assert summary["resolution"] == [160, 120]
        assert summary["latency_ms"] is not None
    # A live status line with state, path, bitrate, RTT and frames, then a clear ending.
    assert "connected | host/udp | in " in err_call and "frames " in err_call
    assert "rtt " in err_call
    assert "call ended (hangup)" in err_call
    with av.open(str(recording)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames >= 10


async def test_failed_call_says_why(stack: Stack, tmp_path: Path) -> None:
    keys = {"VISAVIS_IDENTITY_DIR": str(tmp_path)}
    await signup(stack.url, "carol@example.com")
    await signup(stack.url, "dave@example.com")
    async with (await stack.device("dave@example.com")).events() as events:
        calling = await run_cli("call", "dave@example.com", "--user", "carol@example.com",
                                "--server", stack.url, "--password", PASSWORD, "--json",
                                "--host-address", "127.0.0.1", env=keys)
        from visavis.signaling import messages as m

        incoming = await events.next(m.CallIncoming, within=20)
    dave = stack.sessions[-1]
    await dave.decline(incoming)
    rc, summary, err = await finish(calling)
    assert rc == 1
    assert summary["reason"] == "declined"
    assert "call failed: declined: the callee declined" in err

    unknown = await run_cli("call", "nobody@example.com", "--user", "carol@example.com",
                            "--server", stack.url, "--password", PASSWORD, "--json", env=keys)
    rc, summary, err = await finish(unknown)
    assert rc == 1 and "cannot call nobody@example.com" in summary["error"]
    assert "unknown_user" in err

    bad_password = await run_cli("call", "dave@example.com", "--user", "carol@example.com",
                                 "--server", stack.url, "--password", "wrong-password", env=keys)
    rc, _, err = await finish(bad_password)
    assert rc == 1 and "cannot sign in" in err and "bad_credentials" in err
