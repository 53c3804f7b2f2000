"""The one UDP port that carries the media of every room (RFC 7983 demultiplexing).

First byte 0-3: STUN, routed by the local ufrag in USERNAME (which also teaches the
endpoint the client's address); 20-63: DTLS and 128-191: SRTP/SRTCP, routed by remote
address. Anything else, or anything from an address no check has authenticated, is
dropped and counted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time

from visavis.sfu.ice_lite import parse_request
from visavis.sfu.stats import SfuStats
from visavis.sfu.transport import Address, WebRtcTransport


class MediaEndpoint(asyncio.DatagramProtocol):
    """Routes datagrams of the shared media port to transports."""

    def __init__(self, stats: SfuStats, allowed_networks: list[str] | None = None) -> None:
        self.stats = stats
        self.allowed = [ipaddress.ip_network(n, strict=False) for n in allowed_networks or []]
        self.by_ufrag: dict[str, WebRtcTransport] = {}
        self.by_address: dict[Address, WebRtcTransport] = {}
        self.udp: asyncio.DatagramTransport | None = None
        self.clock = time.monotonic

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.udp = transport  # type: ignore[assignment]  # a DatagramTransport at runtime

    def sendto(self, data: bytes, addr: Address) -> None:
        udp = self.udp
        if udp is not None:
            udp.sendto(data, addr)

    def add(self, transport: WebRtcTransport) -> None:
        self.by_ufrag[transport.local_ufrag] = transport

    def remove(self, transport: WebRtcTransport) -> None:
        """Forget a transport's routes; close its ICE-TCP connections."""
        self.by_ufrag.pop(transport.local_ufrag, None)
        for path in list(transport.addresses):
            if not isinstance(path, tuple):
                path.close()
            elif self.by_address.get(path) is transport:
                del self.by_address[path]

    def allowed_host(self, host: str) -> bool:
        """Whether media from this IP is allowed (``allowed_networks``; empty: any)."""
        return not self.allowed or self._allowed(host)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if not data:
            self.stats.drop("garbage")
            return
        first = data[0]
        if 127 < first < 192:
            transport = self.by_address.get(addr)
            if transport is None:
                self.stats.drop("garbage")
                return
            transport.handle_srtp(data, self.clock())
        elif first < 4:
            parsed = parse_request(data)
            if parsed is None:
                self.stats.drop("garbage")
                return
            message, ufrag = parsed
            if self.allowed and not self._allowed(addr[0]):
                self.stats.drop("stun_unauthenticated")
                return
            transport = self.by_ufrag.get(ufrag)
            if transport is None:
                self.stats.drop("stun_unauthenticated")
                return
            if transport.handle_stun(message, addr, self.clock()):
                self.by_address[addr] = transport
        elif 19 < first < 64:
            transport = self.by_address.get(addr)
            if transport is None:
                self.stats.drop("garbage")
                return
            transport.handle_dtls(data, addr, self.clock())
        else:
            self.stats.drop("garbage")

    def _allowed(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in network for network in self.allowed)

    def error_received(self, exc: Exception) -> None:  # ICMP errors: peer gone; ignore
        pass
