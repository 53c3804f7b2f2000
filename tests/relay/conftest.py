"""Fixtures for the relay tests: a RelayServer on loopback port 0, turnutils_peer.

Every test here runs on uvloop, the event loop ``visavis serve`` runs the relay on: its
transports are not asyncio's classes, and code that assumes they are fails only there.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop

from visavis.config import Settings
from visavis.relay.server import RelayServer

REST_SECRET = "rest-secret-for-tests"


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The relay's tests and fixtures run on the loop ``visavis serve`` uses (uvloop)."""
    return {"uvloop": uvloop.new_event_loop}


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(tmp_path: Path, **relay: Any) -> Settings:
    base: dict[str, Any] = {
        "listening-ip": ["127.0.0.1"],
        "listening-port": 0,
        "tls-listening-port": 0,
        "realm": "visavis.test",
        "user": ["user:pass"],
        "allowed-peer-ip": ["127.0.0.1"],
    }
    base.update(relay)
    return Settings(data_dir=tmp_path, shared_secret=REST_SECRET, relay=base)


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[RelayServer]:
    server = RelayServer.from_settings(make_settings(tmp_path))
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def _echoes(port: int, within: float) -> bool:
    """Whether something echoes a datagram sent to 127.0.0.1:``port`` within ``within`` s
    (asked again every 100 ms: the first datagrams may come before it listens)."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        probe.setblocking(False)
        deadline = loop.time() + within
        while loop.time() < deadline:
            probe.sendto(b"are you there", ("127.0.0.1", port))
            try:
                return await asyncio.wait_for(loop.sock_recv(probe, 64), 0.1) == b"are you there"
            except TimeoutError:
                continue
    return False


@pytest.fixture
async def turn_peer() -> AsyncIterator[int]:
    """A turnutils_peer echo server on loopback, answering; yields its port. The port is
    free when picked but may be taken before turnutils_peer binds it (which then retries
    forever): no echo means pick another."""
    if shutil.which("turnutils_peer") is None:
        pytest.skip("coturn's turnutils are not installed")
    for _ in range(5):
        port = free_udp_port()
        proc = await asyncio.create_subprocess_exec(
            "turnutils_peer", "-L", "127.0.0.1", "-p", str(port),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            if await _echoes(port, within=10.0):
                yield port
                return
        finally:
            if proc.returncode is None:
                proc.kill()  # a stateless echo server; it ignores SIGTERM
                await proc.wait()
    raise AssertionError("turnutils_peer never echoed on a free port in 5 tries")


async def run_tool(*args: str, limit: float = 60.0) -> str:
    """Run a coturn tool to completion (killed by PID on timeout); return its output."""
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return out.decode(errors="replace")
