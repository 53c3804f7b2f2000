"""Cross-node messaging behind one small interface.

Two implementations share it (``visavis.bus.memory.MemoryBus`` in one process,
``visavis.bus.redis.RedisBus`` across nodes) and one contract test suite
(``tests/bus/test_contract.py``) runs against both.

Three services:

* **pub/sub** of opaque bytes on named channels;
* a **mailbox per device**: every message to a device gets the next sequence number of
  that device and is kept for ``ttl`` seconds, so a device that reconnects within the
  grace period reads everything after the last number it saw, in order; appending also
  publishes the number on the channel ``device:<id>`` to wake the node holding the
  device's connection;
* **presence**: which node holds which device's connection, with a time-to-live that the
  node refreshes with heartbeats (a crashed node's devices go offline by themselves).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Collection
from typing import Any

Handler = Callable[[bytes], Awaitable[None]]


def device_channel(device_id: str) -> str:
    """The channel on which mailbox appends for ``device_id`` are announced."""
    return f"device:{device_id}"


class Subscription(ABC):
    @abstractmethod
    async def unsubscribe(self) -> None: ...


class Bus(ABC):
    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> bool:
        """True when the backend answers (for /readyz)."""

    # -- pub/sub -----------------------------------------------------------------
    @abstractmethod
    async def publish(self, channel: str, message: bytes) -> None: ...

    @abstractmethod
    async def subscribe(self, channel: str, handler: Handler) -> Subscription:
        """Call ``handler`` with every message published on ``channel`` after this returns.

        Messages on one channel reach a handler in publication order; a handler that
        raises is logged and does not stop delivery."""

    # -- device mailboxes ----------------------------------------------------------
    @abstractmethod
    async def mailbox_append(self, device_id: str, message: dict[str, Any], *, ttl: float) -> int:
        """Store ``message`` with the device's next sequence number (1, 2, ...), keep it
        ``ttl`` seconds, announce the number on :func:`device_channel`; return it."""

    @abstractmethod
    async def mailbox_read(self, device_id: str, after: int) -> list[tuple[int, dict[str, Any]]]:
        """Messages with a sequence number greater than ``after``, oldest first."""

    @abstractmethod
    async def mailbox_head(self, device_id: str) -> int:
        """The device's last assigned sequence number (0 if none)."""

    async def mailbox_heads(self, device_ids: Collection[str]) -> dict[str, int]:
        """:meth:`mailbox_head` of many devices (a backend batches the round trips)."""
        return {d: await self.mailbox_head(d) for d in device_ids}

    @abstractmethod
    async def mailbox_ack(self, device_id: str, upto: int) -> None:
        """Forget messages numbered ``upto`` or less (the device has them)."""

    # -- presence ------------------------------------------------------------------
    @abstractmethod
    async def set_online(self, device_id: str, node_id: str, *, ttl: float) -> None:
        """Record that ``node_id`` holds the device's connection, for ``ttl`` seconds."""

    async def set_online_many(
        self, device_ids: Collection[str], node_id: str, *, ttl: float
    ) -> None:
        """:meth:`set_online` for many devices (a backend batches the round trips)."""
        for device_id in device_ids:
            await self.set_online(device_id, node_id, ttl=ttl)

    @abstractmethod
    async def set_offline(self, device_id: str, node_id: str) -> None:
        """Clear presence, only if ``node_id`` still holds it (a newer node may)."""

    @abstractmethod
    async def online(self, device_ids: Collection[str]) -> set[str]:
        """Which of these devices have a live connection on some node."""
