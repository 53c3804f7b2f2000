"""Cross-node messaging: :class:`Bus`, in memory or on Redis.

``open_bus(url)`` picks the implementation from the URL; the caller awaits ``open()``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from visavis.bus.base import Bus, Handler, Subscription, device_channel

__all__ = ["Bus", "Handler", "Subscription", "device_channel", "open_bus"]


def open_bus(
    url: str, *, prefix: str = "visavis:", clock: Callable[[], float] = time.monotonic
) -> Bus:
    """An un-opened bus for ``url``: ``memory://`` (one process) or ``redis://`` /
    ``rediss://`` / ``unix://`` (several nodes). ``prefix`` namespaces every Redis key and
    channel; ``clock`` drives the in-memory bus's TTLs (Redis uses its own clock)."""
    scheme = url.partition("://")[0]
    if scheme == "memory":
        from visavis.bus.memory import MemoryBus

        return MemoryBus(clock)
    if scheme in ("redis", "rediss", "unix"):
        from visavis.bus.redis import RedisBus

        return RedisBus(url, prefix=prefix)
    raise ValueError(
        f"unsupported bus URL scheme {scheme!r}: use memory:// or redis://host:port/db"
    )
