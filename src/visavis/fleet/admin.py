"""Operator actions on the fleet (``visavis sfu nodes``, ``visavis sfu drain NODE``)."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from visavis.config import Settings
from visavis.fleet.record import NodeKind, RecordChecker, sign_command
from visavis.fleet.registry import RedisRegistry, View

DRAIN_ORDER_TTL = 24 * 3600.0  # the node reads it at its next heartbeat; kept for restarts


class FleetAdmin:
    """The registry of one deployment, as an operator sees it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = aioredis.Redis.from_url(settings.bus_url)
        self.secret = settings.ensure_shared_secret()
        self.registry = RedisRegistry(self.client, settings.redis_prefix, self.secret)

    async def close(self) -> None:
        await self.client.aclose()

    async def view(self, kind: NodeKind = "sfu") -> View:
        checker = RecordChecker(self.secret, max_skew=self.settings.fleet.max_clock_skew)
        return await self.registry.read(kind, checker, now=time.time())

    async def drain(self, node_id: str) -> None:
        """Order the node to drain (signed with the shared secret, read at its next beat).

        :raises LookupError: no live node has that id."""
        view = await self.view()
        if view.node(node_id) is None:
            live = ", ".join(n.node_id for n in view.nodes) or "none"
            raise LookupError(f"no live SFU node {node_id!r} (live: {live})")
        order = sign_command(self.secret, node_id, "drain", now=time.time(), ttl=DRAIN_ORDER_TTL)
        await self.registry.order(node_id, order, ttl=DRAIN_ORDER_TTL)

    async def wait_empty(self, node_id: str, limit: float) -> int:
        """Wait until no room is placed on the node; the rooms left when time ran out."""
        deadline = time.monotonic() + limit
        while True:
            rooms = len(await self.registry.rooms_on(node_id))
            if rooms == 0 or time.monotonic() >= deadline:
                return rooms
            await asyncio.sleep(0.2)  # polling Redis; the node reports every heartbeat
