"""A node's membership in the fleet: its heartbeat into the Redis registry.

Every ``heartbeat_interval`` the agent measures the node's load (CPU share of this
process since the last beat, forwarded packets/s, rooms, participants), signs a fresh
record and writes it with a ``ttl``; a node that stops (crash, SIGKILL, network split)
is out of the registry ``ttl`` seconds after its last beat. The agent also reads the
operator's signed drain order (``visavis sfu drain NODE``) and, once drained or told by
:meth:`drain` (SIGUSR1), announces ``draining``: signaling then places no new room on it
and moves its rooms away. On a clean stop it withdraws its record at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from visavis.config import Settings
from visavis.fleet.record import (
    NodeKind,
    NodeRecord,
    RecordChecker,
    RecordError,
    verify_command,
)
from visavis.fleet.registry import RedisRegistry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Load:
    """What a node reports about itself at one heartbeat."""

    control_url: str = ""
    media: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()
    rooms: int = 0
    participants: int = 0
    allocations: int = 0  # relays: live TURN allocations
    packets: int = 0  # forwarded (or relayed) so far: the agent turns it into a rate


class FleetAgent:
    """Heartbeats one node into the registry. ``start()`` announces it before returning."""

    def __init__(
        self,
        settings: Settings,
        kind: NodeKind,
        load: Callable[[], Load],
        *,
        client: aioredis.Redis | None = None,
    ) -> None:
        self.settings = settings
        self.fleet = settings.fleet
        self.kind = kind
        self.node_id = settings.node_id
        self.boot = secrets.token_hex(4)
        self.load = load
        self.draining = False
        self.beats = 0
        self._client = client
        self._owns_client = client is None
        self._registry: RedisRegistry | None = None
        self._task: asyncio.Task[None] | None = None
        self._last = (time.monotonic(), time.process_time(), 0)
        self._checker = RecordChecker(
            settings.ensure_shared_secret(), max_skew=settings.fleet.max_clock_skew
        )

    async def start(self) -> None:
        if self._client is None:
            # A stalled Redis fails the beat (retried) instead of hanging the node.
            self._client = aioredis.Redis.from_url(
                self.settings.bus_url, socket_timeout=max(1.0, self.fleet.ttl)
            )
        self._registry = RedisRegistry(
            self._client, self.settings.redis_prefix, self.settings.ensure_shared_secret()
        )
        self._last = (time.monotonic(), time.process_time(), self.load().packets)
        await self.beat()
        self._task = asyncio.create_task(self._beat_forever(), name=f"fleet-{self.kind}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._registry is not None:
            with contextlib.suppress(Exception):
                await self._registry.withdraw(self.kind, self.node_id)
        if self._client is not None and self._owns_client:
            await self._client.aclose()
            self._client = None

    async def lookup(self, kind: NodeKind, node_id: str) -> NodeRecord | None:
        """Another node's record, if it is live and genuine (cascade links trust nothing
        else about a peer)."""
        assert self._registry is not None
        return await self._registry.record(kind, node_id, self._checker, now=time.time())

    def drain(self) -> None:
        """Take no new rooms from now on; signaling moves the live ones away."""
        if not self.draining:
            log.warning("fleet: node %s is draining", self.node_id)
        self.draining = True

    def record(self) -> NodeRecord:
        """The node as it is now (and the rates since the previous call)."""
        load = self.load()
        wall, cpu, packets = time.monotonic(), time.process_time(), load.packets
        last_wall, last_cpu, last_packets = self._last
        span = max(wall - last_wall, 1e-3)
        self._last = (wall, cpu, packets)
        return NodeRecord(
            node_id=self.node_id,
            kind=self.kind,
            boot=self.boot,
            ts=time.time(),
            region=self.fleet.region,
            control_url=load.control_url,
            media=load.media,
            urls=load.urls,
            # SFU: participants; relay: packets/s (what fills each kind of node first).
            capacity=self.fleet.relay_capacity if self.kind == "relay" else self.fleet.capacity,
            cpu=round((cpu - last_cpu) / span, 4),
            pps=round(max(0, packets - last_packets) / span, 1),
            rooms=load.rooms,
            participants=load.participants,
            allocations=load.allocations,
            draining=self.draining,
        )

    async def beat(self) -> None:
        """Read any drain order, then write a fresh record."""
        assert self._registry is not None
        order = await self._registry.pending_order(self.node_id)
        if order is not None and not self.draining:
            try:
                command = verify_command(
                    self.settings.ensure_shared_secret(), order, self.node_id, now=time.time()
                )
            except RecordError as exc:
                log.warning("fleet: ignored a %s drain order: %s", exc.reason, exc)
            else:
                if command == "drain":
                    self.drain()
        await self._registry.announce(self.record(), ttl=self.fleet.ttl)
        self.beats += 1

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.fleet.heartbeat_interval)
            try:
                await self.beat()
            except Exception as exc:  # Redis away: keep trying; the record expires meanwhile
                log.warning("fleet: heartbeat failed: %s", exc)

