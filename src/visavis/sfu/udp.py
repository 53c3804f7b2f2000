"""The one UDP port that carries the media of every room (RFC 7983 demultiplexing).

First byte (:mod:`visavis.protocol.rfc7983`) 0-3: STUN, routed by the local ufrag in
USERNAME (which also teaches the endpoint the client's address); 20-63: DTLS and
128-191: SRTP/SRTCP, routed by remote address. Anything else, or anything from an
address no check has authenticated, is dropped and counted.

The socket is read by the fast path (:class:`visavis.sfu.fastpath.Forwarder`, native
recvmmsg/SRTP/sendmmsg when built), registered with ``loop.add_reader``: it forwards RTP
of known sources itself and hands everything else back here in one call per drain
(:meth:`MediaEndpoint.on_slow`), where :meth:`MediaEndpoint.datagram_received` is the
demultiplexer above.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from typing import Any

from visavis.protocol.rfc7983 import PacketKind, classify
from visavis.sfu import fastpath
from visavis.sfu.ice_lite import parse_request
from visavis.sfu.stats import SfuStats
from visavis.sfu.transport import Address, WebRtcTransport

BUFFER_BYTES = 4 << 20  # socket buffers: a 32-person fan-out is bursty


class MediaEndpoint:
    """Routes datagrams of the shared media port to transports."""

    def __init__(
        self, stats: SfuStats, allowed_networks: list[str] | None = None, gso: bool = True
    ) -> None:
        self.stats = stats
        self.gso = gso
        self.allowed = [ipaddress.ip_network(n, strict=False) for n in allowed_networks or []]
        self.by_ufrag: dict[str, WebRtcTransport] = {}
        self.by_address: dict[Address, WebRtcTransport] = {}
        self.links: dict[Any, fastpath.Link] = {}  # the fast path's view of by_address
        self.sock: socket.socket | None = None
        self.forwarder = fastpath.Forwarder(None, self.links, stats, self.on_slow)
        self.clock = time.monotonic

    def open(self, host: str, port: int) -> int:
        """Bind the media socket and start reading it on the running loop; the port."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                sock.setsockopt(socket.SOL_SOCKET, option, BUFFER_BYTES)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.forwarder = fastpath.Forwarder(sock, self.links, self.stats, self.on_slow)
        if not self.gso:
            self.forwarder.gso = 0
        asyncio.get_running_loop().add_reader(sock.fileno(), self.forwarder.drain)
        port_: int = sock.getsockname()[1]
        return port_

    def close(self) -> None:
        if self.sock is not None:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    def on_slow(
        self,
        raw: list[tuple[bytes, Address]] | None,
        received: list[tuple[fastpath.Link, bytes]] | None,
        outgoing: list[tuple[fastpath.Link, bytes]] | None,
        now: float,
    ) -> None:
        """What the fast path left to Python: datagrams to demultiplex, decrypted RTP of
        SSRCs without a source yet, plain RTP for paths it cannot send on (ICE-TCP)."""
        if raw is not None:
            for data, addr in raw:
                self.datagram_received(data, addr)
        if received is not None:
            for link, plain in received:
                link.owner.listener.on_rtp(plain, now)
        if outgoing is not None:
            for link, plain in outgoing:
                link.owner.send_rtp(plain)

    def sendto(self, data: bytes, addr: Address) -> None:
        sock = self.sock
        if sock is None:
            return
        try:
            sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.stats.drop("send_failed")
        except OSError:  # ICMP errors and the like: the peer is gone
            pass

    def add(self, transport: WebRtcTransport) -> None:
        self.by_ufrag[transport.local_ufrag] = transport

    def bind(self, transport: WebRtcTransport, addr: Address) -> None:
        """Route media from ``addr`` to ``transport`` without an ICE check (a cascade
        link: its peer's address comes from the peer's signed registry record)."""
        transport.addresses.add(addr)
        self.by_address[addr] = transport
        key = fastpath.link_key(addr[0], addr[1])
        if key is not None:
            self.links[key] = transport.link

    def remove(self, transport: WebRtcTransport) -> None:
        """Forget a transport's routes; close its ICE-TCP connections."""
        self.by_ufrag.pop(transport.local_ufrag, None)
        for path in list(transport.addresses):
            if not isinstance(path, tuple):
                path.close()
            elif self.by_address.get(path) is transport:
                del self.by_address[path]
                key = fastpath.link_key(path[0], path[1])
                if key is not None:
                    self.links.pop(key, None)

    def allowed_host(self, host: str) -> bool:
        """Whether media from this IP is allowed (``allowed_networks``; empty: any)."""
        return not self.allowed or self._allowed(host)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if not data:
            self.stats.drop("garbage")
            return
        kind = classify(data[0])
        if kind is PacketKind.SRTP:
            transport = self.by_address.get(addr)
            if transport is None:
                self.stats.drop("garbage")
                return
            transport.handle_srtp(data, self.clock())
        elif kind is PacketKind.STUN:
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
                key = fastpath.link_key(addr[0], addr[1])
                if key is not None:
                    self.links[key] = transport.link
        elif kind is PacketKind.DTLS:
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
