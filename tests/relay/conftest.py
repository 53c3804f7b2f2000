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
    server = RelayServer(make_settings(tmp_path))
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def turn_peer() -> AsyncIterator[int]:
    """A turnutils_peer echo server on loopback; yields its port."""
    if shutil.which("turnutils_peer") is None:
        pytest.skip("coturn's turnutils are not installed")
    port = free_udp_port()
    proc = await asyncio.create_subprocess_exec(
        "turnutils_peer",
        "-L",
        "127.0.0.1",
        "-p",
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.2)
    try:
        yield port
    finally:
        if proc.returncode is None:
            proc.kill()  # a stateless echo server; it ignores SIGTERM
            await proc.wait()


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
