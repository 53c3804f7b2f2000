"""The bus inside one process: what ``visavis serve`` uses when there is a single node.

It keeps the same observable behaviour as :class:`visavis.bus.redis.RedisBus` so the
contract suite runs unchanged against both:

* handlers run in a task per subscription, fed by a queue, never inline in ``publish``
  (a handler that publishes cannot re-enter itself, and order per channel is kept);
* messages are JSON round-tripped, so what is stored is a copy and must be JSON-able;
* a mailbox's sequence counter outlives its messages: it expires ``counter_ttl``
  (default 30 days) after the last append, as on Redis, so a device that stays connected
  but idle longer than the message TTL still sees numbers continue, never restart;
* time-to-live is judged with the injected ``clock``, so tests move time by hand.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from visavis.bus._dispatch import QueuedSubscription
from visavis.bus.base import Bus, Handler, Subscription, device_channel

MAILBOX_LIMIT = 10_000
COUNTER_TTL = 30 * 86400.0


@dataclass
class _Mailbox:
    seq: int = 0
    expires_at: float = 0.0
    items: deque[tuple[int, float, str]] = field(default_factory=deque)


class MemoryBus(Bus):
    """:class:`Bus` in one process. ``clock`` returns seconds (any epoch) for TTLs."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        mailbox_limit: int = MAILBOX_LIMIT,
        counter_ttl: float = COUNTER_TTL,
    ) -> None:
        self._clock = clock
        self._mailbox_limit = mailbox_limit
        self._counter_ttl = counter_ttl
        self._subs: dict[str, list[QueuedSubscription]] = {}
        self._mailboxes: dict[str, _Mailbox] = {}
        self._presence: dict[str, tuple[str, float]] = {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        subs = [sub for channel_subs in self._subs.values() for sub in channel_subs]
        self._subs.clear()
        await asyncio.gather(*(sub.stop() for sub in subs))

    async def ping(self) -> bool:
        return True

    # -- pub/sub -----------------------------------------------------------------
    async def publish(self, channel: str, message: bytes) -> None:
        for sub in self._subs.get(channel, ()):
            sub.push(message)

    async def subscribe(self, channel: str, handler: Handler) -> Subscription:
        sub = QueuedSubscription(channel, handler, self._remove)
        self._subs.setdefault(channel, []).append(sub)
        return sub

    async def _remove(self, sub: QueuedSubscription) -> None:
        subs = self._subs.get(sub.channel)
        if subs is not None and sub in subs:
            subs.remove(sub)
            if not subs:
                del self._subs[sub.channel]

    # -- device mailboxes ----------------------------------------------------------
    def _mailbox(self, device_id: str, now: float) -> _Mailbox | None:
        box = self._mailboxes.get(device_id)
        if box is not None and now >= box.expires_at:
            del self._mailboxes[device_id]
            return None
        if box is not None:
            while box.items and now >= box.items[0][1]:
                box.items.popleft()
        return box

    async def mailbox_append(self, device_id: str, message: dict[str, Any], *, ttl: float) -> int:
        data = json.dumps(message, separators=(",", ":"))
        now = self._clock()
        box = self._mailbox(device_id, now)
        if box is None:
            box = self._mailboxes[device_id] = _Mailbox()
        box.seq += 1
        expires = now + ttl
        box.expires_at = max(box.expires_at, now + max(ttl, self._counter_ttl))
        box.items.append((box.seq, expires, data))
        while len(box.items) > self._mailbox_limit:
            box.items.popleft()
        seq = box.seq
        await self.publish(device_channel(device_id), str(seq).encode())
        return seq

    async def mailbox_read(self, device_id: str, after: int) -> list[tuple[int, dict[str, Any]]]:
        now = self._clock()
        box = self._mailbox(device_id, now)
        if box is None:
            return []
        return [
            (seq, json.loads(data))
            for seq, expires, data in box.items
            if seq > after and now < expires
        ]

    async def mailbox_head(self, device_id: str) -> int:
        box = self._mailbox(device_id, self._clock())
        return 0 if box is None else box.seq

    async def mailbox_ack(self, device_id: str, upto: int) -> None:
        box = self._mailbox(device_id, self._clock())
        if box is None:
            return
        while box.items and box.items[0][0] <= upto:
            box.items.popleft()

    # -- presence ------------------------------------------------------------------
    async def set_online(self, device_id: str, node_id: str, *, ttl: float) -> None:
        self._presence[device_id] = (node_id, self._clock() + ttl)

    async def set_offline(self, device_id: str, node_id: str) -> None:
        entry = self._presence.get(device_id)
        if entry is not None and entry[0] == node_id:
            del self._presence[device_id]

    async def online(self, device_ids: Collection[str]) -> set[str]:
        now = self._clock()
        found: set[str] = set()
        for device_id in device_ids:
            entry = self._presence.get(device_id)
            if entry is None:
                continue
            if now >= entry[1]:
                del self._presence[device_id]
            else:
                found.add(device_id)
        return found
