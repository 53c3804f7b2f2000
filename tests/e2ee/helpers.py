"""Sans-I/O helpers: a fake signaling channel between CallKeys of several devices."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from visavis.e2ee.keys import CallKeys, Outgoing


@dataclass
class Transfer:
    """Test and simulation helper: deliver every device's outgoing messages to the others."""

    devices: dict[str, CallKeys] = field(default_factory=dict)
    tamper: Callable[[str, str, str], str] | None = None  # (from, to, payload) -> payload

    def deliver(self, sender: str, outgoing: list[Outgoing]) -> None:
        queue = [(sender, o) for o in outgoing]
        while queue:
            src, message = queue.pop(0)
            targets = [message.to_device] if message.to_device else list(self.devices)
            for target in targets:
                if target == src or target not in self.devices:
                    continue
                payload = message.payload
                if self.tamper is not None:
                    payload = self.tamper(src, target, payload)
                queue += [(target, o) for o in self.devices[target].receive(src, payload)]
