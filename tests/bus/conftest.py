"""Fixtures for the bus contract suite: MemoryBus on a hand-driven clock, RedisBus on
the local Redis under a fresh key prefix per test (deleted with SCAN + DEL afterwards;
never FLUSHDB, CI's Redis is shared)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as redis

from tests.services import REDIS_URL, delete_redis_prefix
from visavis.bus.base import Bus
from visavis.bus.memory import MemoryBus
from visavis.bus.redis import RedisBus


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    """One bus under test, plus what a test needs to act on its backend."""

    kind: str
    bus: Bus
    clock: FakeClock | None = None
    prefix: str = ""
    extra: list[Bus] = field(default_factory=list)

    async def elapse(self, seconds: float) -> None:
        """Let ``seconds`` pass for TTL purposes: on the fake clock, or on the clock Redis
        expires keys by (its ``TIME``, polled; a loaded test process does not matter)."""
        if self.clock is not None:
            self.clock.now += seconds
            return
        client = redis.Redis.from_url(REDIS_URL)
        try:
            sec, usec = await client.time()
            until = sec + usec / 1e6 + seconds
            for _ in range(int(seconds * 100) + 1000):  # bounded: 10 ms polls, ~10 s spare
                sec, usec = await client.time()
                if sec + usec / 1e6 >= until:
                    return
                await asyncio.sleep(0.01)  # polling Redis's clock
            raise AssertionError(f"Redis's clock did not advance {seconds} s")
        finally:
            await client.aclose()

    async def variant(self, **options: Any) -> Bus:
        """Another bus of the same kind (same clock or Redis prefix) built with
        constructor ``options`` such as ``mailbox_limit`` or ``counter_ttl``."""
        bus: Bus
        if self.clock is not None:
            bus = MemoryBus(self.clock, **options)
        else:
            bus = RedisBus(REDIS_URL, prefix=self.prefix, **options)
        await bus.open()
        self.extra.append(bus)
        return bus

    async def other_node(self) -> Bus:
        """A second bus on the same backend, as another signaling node would have."""
        assert self.kind == "redis", "cross-node delivery needs a shared backend: Redis only"
        bus = RedisBus(REDIS_URL, prefix=self.prefix)
        await bus.open()
        self.extra.append(bus)
        return bus


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        clock = FakeClock()
        backend = Backend("memory", MemoryBus(clock), clock=clock)
    else:
        prefix = f"visavis-test:{uuid.uuid4().hex}:"
        backend = Backend("redis", RedisBus(REDIS_URL, prefix=prefix), prefix=prefix)
    await backend.bus.open()
    try:
        yield backend
    finally:
        for bus in [backend.bus, *backend.extra]:
            await bus.close()
        if backend.prefix:
            await delete_redis_prefix(backend.prefix)


@pytest.fixture
def bus(backend: Backend) -> Bus:
    return backend.bus
