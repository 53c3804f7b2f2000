"""SFU fixtures: a server on loopback port 0, join tokens, aiortc clients on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aioice.ice
import pytest
from pydantic import SecretStr

from visavis.config import Settings
from visavis.sfu.server import SfuServer
from visavis.tokens import sign_token

SECRET = "sfu-test-secret"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice gathers only 127.0.0.1: no test media leaves loopback (FIELD-NOTES)."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda *a, **k: ["127.0.0.1"])


def make_settings(tmp_path: Path, **sfu: object) -> Settings:
    values: dict[str, object] = {
        "port": 0,
        "media_port": 0,
        "tcp_port": 0,
        "dead_timeout": 3.0,
        "allowed_networks": ["127.0.0.0/8"],
    }
    values.update(sfu)
    return Settings(data_dir=tmp_path, shared_secret=SecretStr(SECRET), sfu=values)


@pytest.fixture
async def sfu(tmp_path: Path) -> AsyncIterator[SfuServer]:
    server = SfuServer(make_settings(tmp_path))
    await server.start()
    yield server
    await server.close()


TokenFactory = Callable[..., str]


@pytest.fixture
def token() -> TokenFactory:
    def make(user: str, room: str = "room-1", device: str = "d1", ttl: float = 60) -> str:
        claims = {"room": room, "call": "call-1", "user": user, "device": device}
        return sign_token(SECRET, claims, now=time.time(), ttl=ttl)

    return make
