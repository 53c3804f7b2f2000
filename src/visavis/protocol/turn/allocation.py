"""Allocations, permissions and channels (RFC 8656 2.2-2.5), keyed by five-tuple.

An :class:`Allocation` holds everything its hot paths need, so relaying a packet is a
couple of dictionary look-ups: ``permissions`` maps a peer IP to its expiry,
``channels``/``channel_by_peer`` map a channel number to its peer and back. Expiry times
are absolute values of the caller's clock (``now``); nothing here reads a clock.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from visavis.protocol.ratelimit import TokenBucket

Addr = tuple[str, int]

PERMISSION_LIFETIME = 300.0
CHANNEL_LIFETIME = 600.0
_CHANNEL_HEAD = struct.Struct("!HH")


class FiveTuple(NamedTuple):
    """Client transport address, server transport address and protocol of a client."""

    transport: str  # "udp", "tcp" or "tls"
    client: Addr
    server: Addr

    @property
    def stream(self) -> bool:
        return self.transport != "udp"


@dataclass(slots=True)
class Channel:
    number: int
    peer: Addr
    expiry: float
    handle: Any  # the relay socket serving the peer's family


@dataclass(slots=True)
class Relay:
    """One relayed transport address of an allocation and the shell's socket for it."""

    family: int  # 4 or 6
    address: Addr
    handle: Any


@dataclass(slots=True, eq=False)
class Allocation:
    five_tuple: FiveTuple
    username: str
    account: str
    key: bytes
    algorithm: int
    relays: dict[int, Relay]
    expiry: float
    transaction_id: bytes
    success_response: bytes = b""
    tcp: bool = False  # an RFC 6062 TCP allocation
    permissions: dict[str, float] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    channel_by_peer: dict[Addr, Channel] = field(default_factory=dict)
    bucket_in: TokenBucket | None = None
    bucket_out: TokenBucket | None = None
    # counters (read by the metrics collector)
    packets_to_peer: int = 0
    bytes_to_peer: int = 0
    packets_to_client: int = 0
    bytes_to_client: int = 0
    dropped: int = 0

    def permitted(self, ip: str, now: float) -> bool:
        expiry = self.permissions.get(ip)
        return expiry is not None and expiry >= now

    def expire(self, now: float) -> bool:
        """Forget permissions and channels expired by ``now`` (RFC 8656 9, 12); True if any
        were."""
        ips = [ip for ip, exp in self.permissions.items() if exp <= now]
        for ip in ips:
            del self.permissions[ip]
        chans = [ch for ch in self.channels.values() if ch.expiry <= now]
        for ch in chans:
            del self.channels[ch.number]
            self.channel_by_peer.pop(ch.peer, None)
        return bool(ips or chans)

    def next_deadline(self) -> float:
        """The earliest of the allocation's, its permissions' and its channels' expiry."""
        times = [self.expiry, *self.permissions.values()]
        times.extend(ch.expiry for ch in self.channels.values())
        return min(times)

    def channel_frame(self, channel: Channel, data: bytes) -> bytes:
        """ChannelData carrying ``data`` to the client (padded on stream transports)."""
        frame = _CHANNEL_HEAD.pack(channel.number, len(data)) + data
        if self.five_tuple.transport != "udp" and len(data) & 3:
            frame += b"\x00" * (-len(data) & 3)
        return frame
