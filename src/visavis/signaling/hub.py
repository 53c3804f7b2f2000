"""Device connections of one signaling node, and delivery of events to any device.

Every event for a device is appended to its mailbox on the bus (which numbers it) and
announced on the device's channel. Whichever node holds the device's WebSocket is
subscribed to that channel and flushes the mailbox to the socket in order, starting after
the last number it sent. A device that was offline finds its events waiting when it
reconnects within the grace period, on any node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from starlette.websockets import WebSocket, WebSocketState

from visavis.bus.base import Bus, Subscription, device_channel
from visavis.clock import Clock
from visavis.signaling.metrics import SignalingMetrics

log = logging.getLogger(__name__)

REVOKED = b"revoked"
# Key carrying an event's origin time through the mailbox (for the ring latency metric).
ORIGIN_KEY = "_t"


class Connection:
    """One device's WebSocket on this node."""

    def __init__(self, websocket: WebSocket, device_id: str, last_sent: int) -> None:
        self.websocket = websocket
        self.device_id = device_id
        self.last_sent = last_sent
        self.subscription: Subscription | None = None
        self._send_lock = asyncio.Lock()
        self.closed = False

    async def send(self, message: BaseModel | dict[str, Any]) -> None:
        data = (
            message.model_dump(mode="json", exclude_none=True)
            if isinstance(message, BaseModel)
            else message
        )
        async with self._send_lock:
            await self._send_json(data)

    async def _send_json(self, data: dict[str, Any]) -> None:
        if self.closed or self.websocket.application_state != WebSocketState.CONNECTED:
            return
        try:
            await self.websocket.send_json(data)
        except Exception:  # the peer went away: the receive loop will notice and clean up
            self.closed = True

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            await self.websocket.close(code=code, reason=reason)


class Hub:
    def __init__(
        self,
        *,
        bus: Bus,
        clock: Clock,
        node_id: str,
        grace: float,
        presence_ttl: float,
        metrics: SignalingMetrics,
    ) -> None:
        self.bus = bus
        self.clock = clock
        self.node_id = node_id
        self.grace = grace
        self.presence_ttl = presence_ttl
        self.metrics = metrics
        self.connections: dict[str, Connection] = {}
        self._flush_locks: dict[str, asyncio.Lock] = {}

    # -- delivery --------------------------------------------------------------------
    async def deliver(
        self, device_ids: Iterable[str], event: BaseModel, *, origin: float | None = None
    ) -> None:
        """Append ``event`` to each device's mailbox (the bus wakes the holding node)."""
        payload = event.model_dump(mode="json", exclude_none=True)
        payload.pop("seq", None)
        if origin is not None:
            payload[ORIGIN_KEY] = origin
        ids = list(dict.fromkeys(device_ids))
        await asyncio.gather(*(self.bus.mailbox_append(d, payload, ttl=self.grace) for d in ids))

    async def revoke(self, device_id: str) -> None:
        """Close the device's connection on whichever node holds it."""
        await self.bus.publish(device_channel(device_id), REVOKED)

    # -- connections -----------------------------------------------------------------
    async def attach(self, conn: Connection) -> None:
        old = self.connections.get(conn.device_id)
        if old is not None:
            await old.close(4409, "replaced by a newer connection of this device")
            await self._detach_subscription(old)
        self.connections[conn.device_id] = conn
        self.metrics.connections.set(len(self.connections))

        async def on_message(data: bytes) -> None:
            if data == REVOKED:
                await conn.close(4401, "device revoked")
                return
            await self.flush(conn)

        conn.subscription = await self.bus.subscribe(device_channel(conn.device_id), on_message)
        await self.bus.set_online(conn.device_id, self.node_id, ttl=self.presence_ttl)

    async def detach(self, conn: Connection) -> None:
        await self._detach_subscription(conn)
        if self.connections.get(conn.device_id) is conn:
            del self.connections[conn.device_id]
            self._flush_locks.pop(conn.device_id, None)
            await self.bus.set_offline(conn.device_id, self.node_id)
        self.metrics.connections.set(len(self.connections))

    async def _detach_subscription(self, conn: Connection) -> None:
        if conn.subscription is not None:
            sub, conn.subscription = conn.subscription, None
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def flush(self, conn: Connection) -> None:
        """Send every mailbox message after ``conn.last_sent``, in order, once."""
        lock = self._flush_locks.setdefault(conn.device_id, asyncio.Lock())
        async with lock:
            if conn.closed:
                return
            for seq, message in await self.bus.mailbox_read(conn.device_id, conn.last_sent):
                if seq <= conn.last_sent:
                    continue
                origin = message.pop(ORIGIN_KEY, None)
                message["seq"] = seq
                await conn.send(message)
                conn.last_sent = seq
                if origin is not None and message.get("type") == "call.incoming":
                    self.metrics.ring_latency.observe(max(0.0, self.clock.now() - origin))

    async def heartbeat(self) -> None:
        """Keep this node's devices online on the bus, and flush their mailboxes: a
        wake-up lost with a dropped pub/sub connection delays an event, never loses it.

        In batches: one round trip per thousand devices for presence and one for the
        mailbox heads, then a flush only where the head is past what was sent. (Two round
        trips per device made an idle node of 5,000 devices spend most of a starved core
        on its heartbeat: found by the 10,000-device soak.)"""
        conns = list(self.connections.items())
        ids = [device_id for device_id, _ in conns]
        await self.bus.set_online_many(ids, self.node_id, ttl=self.presence_ttl)
        heads = await self.bus.mailbox_heads(ids)
        for device_id, conn in conns:
            if heads.get(device_id, 0) > conn.last_sent:
                await self.flush(conn)

    async def close_all(self) -> None:
        for conn in list(self.connections.values()):
            await conn.close(1001, "server shutting down")
            await self.detach(conn)
