"""E2EE fixtures: an SFU on loopback port 0 and join tokens (as tests/sfu uses)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aioice.ice
import pytest

from tests.sfu.conftest import SECRET, make_settings
from visavis.sfu.server import SfuServer
from visavis.tokens import sign_token


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice gathers only 127.0.0.1: no test media leaves loopback (FIELD-NOTES)."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda *a, **k: ["127.0.0.1"])


@pytest.fixture
async def sfu(tmp_path: Path) -> AsyncIterator[SfuServer]:
    # A loaded CI machine can stall a client for seconds: do not declare it dead at 3 s.
    server = SfuServer(make_settings(tmp_path, dead_timeout=30.0))
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def token() -> Callable[..., str]:
    def make(user: str, room: str = "room-1") -> str:
        claims = {"room": room, "call": "call-1", "user": user, "device": user}
        return sign_token(SECRET, claims, now=time.time(), ttl=60)

    return make
