"""Delivery of pub/sub messages to handlers, shared by both buses.

Each subscription owns a queue and a task: ``publish`` (or the Redis reader) only
enqueues, so a handler never runs inside the publisher's call stack, a slow handler
delays only its own subscription, and messages on a channel reach it in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from visavis.bus.base import Handler, Subscription

log = logging.getLogger("visavis.bus")


class QueuedSubscription(Subscription):
    """One handler on one channel; ``on_unsubscribe`` detaches it from its bus."""

    def __init__(
        self,
        channel: str,
        handler: Handler,
        on_unsubscribe: Callable[[QueuedSubscription], Awaitable[None]],
    ) -> None:
        self.channel = channel
        self._handler = handler
        self._on_unsubscribe = on_unsubscribe
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.closed = False
        self._task = asyncio.create_task(self._deliver(), name=f"bus-subscription:{channel}")

    def push(self, message: bytes) -> None:
        """Queue ``message`` for the handler (never blocks, never raises)."""
        if not self.closed:
            self._queue.put_nowait(message)

    async def _deliver(self) -> None:
        while True:
            message = await self._queue.get()
            if self.closed:
                return
            try:
                await self._handler(message)
            except Exception:
                log.exception("bus handler for channel %r failed", self.channel)

    async def stop(self) -> None:
        """End delivery without telling the bus (it is closing and forgets us itself)."""
        self.closed = True
        if asyncio.current_task() is not self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def unsubscribe(self) -> None:
        """Stop delivery; queued messages not yet handled are dropped. Safe to call from
        inside the handler itself (delivery then stops once it returns)."""
        if self.closed:
            return
        self.closed = True
        try:
            await self._on_unsubscribe(self)
        finally:
            await self.stop()
