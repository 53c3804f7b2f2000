"""ICE over TCP (RFC 6544): the SFU's passive TCP candidate, RFC 4571 framing.

The TCP port is only a shell around the parts the UDP port uses: every STUN, DTLS and
SRTP packet travels as one frame with a 2-byte big-endian length prefix
(:class:`~visavis.protocol.rfc4571.Rfc4571Framer`), and each frame goes to the same
:class:`~visavis.sfu.transport.WebRtcTransport` a datagram would.

A connection belongs to nobody until its first frame, which must be a STUN binding
request whose USERNAME names a transport (local ufrag) and that passes that transport's
short-term authentication; the connection is then bound to that transport for its life
and is itself a path (:class:`~visavis.sfu.transport.StreamPath`) the transport can
select and answer on. Later frames are demultiplexed by first byte
(:mod:`visavis.protocol.rfc7983`): STUN to
the ICE-lite check handler, DTLS to the DTLS server, SRTP/SRTCP to the decryptor.

Bad input closes only the connection it came on, and is counted
(``visavis_sfu_dropped_packets_total{reason}``): a frame that is empty or longer than
``max_frame`` (``tcp_bad_frame``); a first frame that is not an authenticated binding
request for a live transport, or no such frame within ``auth_timeout``
(``tcp_unauthenticated``); a frame of no RFC 7983 range (``garbage``); a connection from
outside ``allowed_networks`` or beyond ``max_pending`` unbound connections
(``tcp_refused``). SRTP failing authentication is dropped as on UDP, without closing.
Media to a client whose TCP send buffer holds more than ``max_backlog`` bytes is dropped
(``tcp_backlog``) rather than queued: late media is useless, and memory stays bounded.
"""

from __future__ import annotations

import asyncio
import logging

from visavis.protocol import rfc4571
from visavis.protocol.rfc4571 import FRAME_LIMIT, MAX_FRAME, FramingError, Rfc4571Framer
from visavis.protocol.rfc7983 import PacketKind, classify
from visavis.sfu.ice_lite import parse_request
from visavis.sfu.transport import Address, WebRtcTransport
from visavis.sfu.udp import MediaEndpoint

logger = logging.getLogger(__name__)


class IceTcpListener:
    """The ICE-TCP port: accepts connections and routes their frames to transports."""

    def __init__(
        self,
        endpoint: MediaEndpoint,
        *,
        max_frame: int = MAX_FRAME,
        auth_timeout: float = 5.0,
        max_pending: int = 256,
        max_backlog: int = 256 * 1024,
    ) -> None:
        self.endpoint = endpoint
        self.stats = endpoint.stats
        self.max_frame = max_frame
        self.auth_timeout = auth_timeout
        self.max_pending = max_pending
        self.max_backlog = max_backlog
        self.connections: set[IceTcpConnection] = set()
        self.pending = 0  # connections not yet bound to a transport
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: any free port); return the port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: IceTcpConnection(self), host, port)
        return int(self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.abort()


class IceTcpConnection(asyncio.Protocol):
    """One client's TCP connection: a framed path into one transport."""

    def __init__(self, listener: IceTcpListener) -> None:
        self.listener = listener
        self.stats = listener.stats
        self.framer = Rfc4571Framer(listener.max_frame)
        self.bound: WebRtcTransport | None = None
        self.closed = False
        self._peer: Address = ("", 0)
        self._tcp: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._counted_pending = False

    # -- StreamPath ----------------------------------------------------------------------
    @property
    def peer(self) -> Address:
        return self._peer

    def send(self, data: bytes) -> None:
        tcp = self._tcp
        if tcp is None or self.closed:
            return
        if tcp.get_write_buffer_size() > self.listener.max_backlog:
            self.stats.drop("tcp_backlog")
            return
        if not 0 < len(data) <= FRAME_LIMIT:
            return
        tcp.write(rfc4571.frame(data))

    def close(self) -> None:
        self.closed = True
        if self._tcp is not None:
            self._tcp.close()

    def abort(self) -> None:
        self.closed = True
        if self._tcp is not None:
            self._tcp.abort()

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._tcp = transport  # type: ignore[assignment]  # a stream Transport at runtime
        listener = self.listener
        listener.connections.add(self)
        self.stats.tcp_connections += 1
        peer = transport.get_extra_info("peername")
        self._peer = (str(peer[0]), int(peer[1])) if peer else ("", 0)
        if not listener.endpoint.allowed_host(self._peer[0]) or (
            listener.pending >= listener.max_pending
        ):
            self.stats.drop("tcp_refused")
            self.abort()
            return
        listener.pending += 1
        self._counted_pending = True
        self._timer = asyncio.get_running_loop().call_later(
            listener.auth_timeout, self._auth_expired
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._unpend()
        self.listener.connections.discard(self)
        if self.bound is not None:
            self.bound.path_closed(self)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            frames = self.framer.feed(data)
        except FramingError:
            self.stats.drop("tcp_bad_frame")
            self.abort()
            return
        if not frames:
            return
        now = self.listener.endpoint.clock()
        for frame in frames:
            if self.closed:
                return
            self._frame(frame, now)

    def eof_received(self) -> bool | None:
        return None  # close our side too

    # -- demultiplexing --------------------------------------------------------------------
    def _frame(self, frame: bytes, now: float) -> None:
        transport = self.bound
        kind = classify(frame[0])
        if transport is None:
            self._first_frame(frame, now)
        elif kind is PacketKind.SRTP:
            transport.handle_srtp(frame, now)
        elif kind is PacketKind.DTLS:
            transport.handle_dtls(frame, self, now)
        elif kind is PacketKind.STUN:
            parsed = parse_request(frame)
            if parsed is None:
                self.stats.drop("garbage")  # well framed STUN, not a request: ignore
            elif parsed[1] != transport.local_ufrag:
                self.stats.drop("stun_unauthenticated")
            else:
                transport.handle_stun(parsed[0], self, now)
        else:
            self.stats.drop("garbage")
            self.abort()

    def _first_frame(self, frame: bytes, now: float) -> None:
        parsed = parse_request(frame) if classify(frame[0]) is PacketKind.STUN else None
        transport = self.listener.endpoint.by_ufrag.get(parsed[1]) if parsed else None
        if parsed is None or transport is None or not transport.handle_stun(parsed[0], self, now):
            self.stats.drop("tcp_unauthenticated")
            self.abort()
            return
        self.bound = transport
        self._unpend()

    def _auth_expired(self) -> None:
        if self.bound is None and not self.closed:
            self.stats.drop("tcp_unauthenticated")
            self.abort()

    def _unpend(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._counted_pending:
            self._counted_pending = False
            self.listener.pending -= 1
