"""A real relay and signaling server on loopback for client SDK tests."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from visavis.client.session import Session
from visavis.config import Settings
from visavis.relay.server import RelayServer
from visavis.signaling.server import SignalingServer

PASSWORD = "correct horse battery"
_users = itertools.count(1)


@dataclass
class Stack:
    signaling: SignalingServer
    relay: RelayServer
    sessions: list[Session] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.signaling.url

    async def user(self, name: str | None = None, **options: Any) -> Session:
        """Sign up a fresh user and sign in one device, pinned to loopback for ICE."""
        handle = f"{name or 'user'}{next(_users)}@example.com"
        options.setdefault("host_addresses", ["127.0.0.1"])
        session = await Session.login(self.url, handle, PASSWORD, signup=True, **options)
        self.sessions.append(session)
        return session

    async def device(self, handle: str, **options: Any) -> Session:
        """Another device of an existing user."""
        options.setdefault("host_addresses", ["127.0.0.1"])
        session = await Session.login(self.url, handle, PASSWORD, **options)
        self.sessions.append(session)
        return session


def loopback_settings(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path, shared_secret="client-test-secret")
    settings.signaling.port = 0
    settings.signaling.ring_timeout = 10.0
    settings.relay.listening_port = 0
    settings.relay.allow_loopback_peers = True
    return settings


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    settings = loopback_settings(tmp_path)
    relay = RelayServer.from_settings(settings)
    await relay.start()
    signaling = SignalingServer(settings, ice_urls=relay.endpoints)
    try:
        await signaling.start()
        s = Stack(signaling, relay)
        try:
            yield s
        finally:
            for session in s.sessions:
                await session.close()
    finally:
        await signaling.close()
        await relay.close()


async def signup(url: str, handle: str) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{url}/api/signup", json={"handle": handle, "password": PASSWORD})
        assert r.status_code == 201, r.text
