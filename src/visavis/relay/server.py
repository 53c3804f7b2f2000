"""The STUN/TURN relay service: asyncio shell around :class:`visavis.protocol.turn.TurnServer`.

The hot path avoids asyncio transports: listener and relay UDP sockets are non-blocking
sockets watched with ``loop.add_reader``; each wake-up drains up to a batch of datagrams
through :mod:`visavis.relay.fastpath` (``recvmmsg`` in C when the extension is built),
which forwards ChannelData on bound channels with valid permissions itself and returns
everything else to the core. Sends go out with ``sendto`` straight away; one that would
block is queued (bounded, overflow counted) and flushed by ``loop.add_writer``. TCP and
TLS clients use ordinary asyncio protocols with a :class:`StreamFramer`. The clock is read
once per batch and passed to the core. One timer drives :meth:`TurnServer.sweep`, armed
for the core's :meth:`TurnServer.next_deadline` and moved earlier whenever a call into the
core brings that deadline closer, so an allocation, permission or channel lapses when it
is due, not up to a polling period later, and an idle relay does not wake up at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from prometheus_client import CollectorRegistry

from visavis.protocol.turn import (
    Bound,
    CapacityError,
    ConnectPeer,
    CredentialStore,
    FiveTuple,
    Forward,
    FramingError,
    PeerPolicy,
    StreamFramer,
    TurnConfig,
    TurnServer,
    parse_user_entry,
)
from visavis.protocol.turn.allocation import Addr, Allocation
from visavis.relay import fastpath
from visavis.relay.metrics import RelayCollector
from visavis.relay.settings import RelaySettings
from visavis.relay.tcp_relay import PeerPipe, Spliced, StreamTransport, TcpRelay

if TYPE_CHECKING:
    from visavis.config import Settings

log = logging.getLogger("visavis.relay")

BATCH = 64  # datagrams per wake-up and socket
# Relay sockets under the pure-Python fallback read one datagram per wake-up: the poller
# is level-triggered, and a relay socket rarely has a second one queued, so draining
# would cost a failing recvfrom and an exception per packet (recvmmsg has no such cost).
PEER_BATCH = BATCH if fastpath.NATIVE else 1
MAX_SEND_QUEUE = 4096  # datagrams waiting for a writable socket, per socket
CERT_CHECK_INTERVAL = 10.0  # seconds between looks at the TLS files' mtimes
MAX_STREAM_BUFFER = 1 << 20
_NEVER = float("inf")


UDP_BUFFER = 4 << 20  # bytes asked for each UDP listener's receive and send buffers


def _size_buffers(sock: socket.socket) -> None:
    """Ask for UDP_BUFFER each way; warn when the kernel caps it (net.core.rmem_max,
    wmem_max), since bursts from many clients then overflow and are lost."""
    for opt, sysctl in ((socket.SO_RCVBUF, "rmem_max"), (socket.SO_SNDBUF, "wmem_max")):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, UDP_BUFFER)
        got = sock.getsockopt(socket.SOL_SOCKET, opt) // 2  # Linux reports double
        if got < UDP_BUFFER:
            log.warning(
                "relay UDP %s buffer is %d KiB, not %d KiB: raise net.core.%s "
                "(docs/operations.md, 'Descriptors and socket buffers')",
                "receive" if opt == socket.SO_RCVBUF else "send",
                got >> 10,
                UDP_BUFFER >> 10,
                sysctl,
            )


def _host_port(addr: Any) -> Addr:
    return addr[0], addr[1]


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class _RelaySocket:
    """One relayed transport address: a UDP socket talking to peers.

    ``routes`` is its fast-path table (peer -> client, see :mod:`visavis.relay.fastpath`);
    datagrams without a live route go to the core.
    """

    __slots__ = (
        "alloc",
        "client_addr",
        "client_sock",
        "client_write",
        "five_tuple",
        "relay",
        "routes",
        "sock",
    )

    def __init__(self, relay: RelayServer, sock: socket.socket, five_tuple: FiveTuple) -> None:
        self.relay = relay
        self.sock = sock
        self.five_tuple = five_tuple
        self.alloc: Allocation | None = None
        # UDP clients: sendto on the listener socket; stream clients: the connection.
        self.client_sock: socket.socket | None = None
        self.client_addr: Addr = five_tuple.client
        self.client_write: Callable[[bytes], Any] | None = None
        self.routes: dict[object, Any] = {}

    def on_slow(self, slow: list[tuple[bytes, Addr]] | None, now: float) -> None:
        """Datagrams the fast path left to the core (and sends that would have blocked)."""
        if self.relay.blocked:
            self.relay.flush_blocked()
        if slow is not None:
            for data, addr in slow:
                self._slow(data, addr, now)

    def _slow(self, data: bytes, addr: Addr, now: float) -> None:
        alloc = self.alloc
        if alloc is None:
            core = self.relay.core
            alloc = self.alloc = core.allocations.get(self.five_tuple) if core else None
            if alloc is None:
                return
        out = self.relay.handle_peer_data(alloc, addr, data, now)
        if out is None:
            return
        if self.client_sock is not None:
            self.relay.send(self.client_sock, out, self.client_addr)
        elif self.client_write is not None:
            self.client_write(out)


class _UdpListener:
    """A client-facing UDP socket (STUN, TURN requests, ChannelData)."""

    def __init__(self, relay: RelayServer, sock: socket.socket) -> None:
        self.relay = relay
        self.sock = sock
        self.local: Addr = _host_port(sock.getsockname())
        self._tuples: dict[Addr, FiveTuple] = {}
        self.routes: dict[object, Any] = {}  # fast path: (client, channel) -> peer

    def five_tuple(self, addr: Addr) -> FiveTuple:
        ft = self._tuples.get(addr)
        if ft is None:
            if len(self._tuples) > 100_000:
                self._tuples.clear()
            ft = self._tuples[addr] = FiveTuple("udp", addr, self.local)
        return ft

    def on_slow(self, slow: list[tuple[bytes, Addr]] | None, now: float) -> None:
        """Datagrams the fast path left to the core (and sends that would have blocked)."""
        relay = self.relay
        if relay.blocked:
            relay.flush_blocked()
        if slow is None:
            return
        core = relay.core
        assert core is not None
        send = relay.send
        sock = self.sock
        tuples = self._tuples
        for data, addr in slow:
            ft = tuples.get(addr) or self.five_tuple(addr)
            if data and 0x40 <= data[0] <= 0x7F:
                fwd = core.handle_channel_data(data, ft, now)
                if fwd is not None:
                    send(fwd.handle.sock, fwd.data, fwd.peer)
                continue
            out = core.handle_stun(data, ft, now)
            if isinstance(out, bytes):
                send(sock, out, addr)
            elif isinstance(out, Forward):
                send(out.handle.sock, out.data, out.peer)
        relay.rearm()


class _StreamConnection(Spliced):
    """A TCP or TLS client connection carrying STUN and padded ChannelData."""

    def __init__(self, relay: RelayServer, transport_name: str) -> None:
        self.relay = relay
        self.transport_name = transport_name
        self.framer = StreamFramer()
        self.transport: StreamTransport | None = None
        self.five_tuple: FiveTuple | None = None
        self.partner: PeerPipe | None = None  # RFC 6062 data connection once bound

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = self.transport = cast(StreamTransport, transport)  # any loop's, duck-typed
        if len(self.relay.connections) >= self.relay.config.max_tcp_connections:
            self.relay.io_errors += 1
            stream.abort()
            return
        peer = _host_port(transport.get_extra_info("peername"))
        local = _host_port(transport.get_extra_info("sockname"))
        self.five_tuple = FiveTuple(self.transport_name, peer, local)
        self.relay.connections[self.five_tuple] = self

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > MAX_STREAM_BUFFER:
            self.relay.io_errors += 1  # slow reader: drop rather than buffer without bound
            return
        transport.write(data)

    def data_received(self, data: bytes) -> None:
        partner = self.partner
        if partner is not None:
            if partner.transport is not None:
                partner.transport.write(data)
            return
        core = self.relay.core
        ft = self.five_tuple
        if core is None or ft is None or self.transport is None:
            return
        framer = self.framer
        framer.append(data)
        now = time.time()
        while True:
            try:
                frame = framer.pop()
            except FramingError:
                core.stats.dropped["framing"] += 1
                self.transport.close()
                return
            if frame is None:
                return
            try:
                if 0x40 <= frame[0] <= 0x7F:
                    fwd = core.handle_channel_data(frame, ft, now)
                    if fwd is not None:
                        self.relay.send(fwd.handle.sock, fwd.data, fwd.peer)
                    continue
                out = core.handle_stun(frame, ft, now)
                self.relay.rearm()
                if isinstance(out, bytes):
                    self.write(out)
                elif isinstance(out, Forward):
                    self.relay.send(out.handle.sock, out.data, out.peer)
                elif isinstance(out, ConnectPeer):
                    self.relay.spawn(self.relay.connect_peer(out, self))
                elif isinstance(out, Bound):
                    self.write(out.response)
                    self._become_pipe(out.connection_id)
                    return
            except OSError:
                self.relay.io_errors += 1

    def _become_pipe(self, connection_id: int) -> None:
        """After ConnectionBind: raw bytes to and from the peer connection (RFC 6062 5.4)."""
        pipe = self.relay.peer_pipes.get(connection_id)
        if pipe is None or pipe.transport is None or self.transport is None:
            if self.transport is not None:
                self.transport.close()
            return
        self.partner = pipe
        pipe.partner = self
        rest = self.framer.take_rest()
        if rest:
            pipe.transport.write(rest)
        pipe.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        partner, self.partner = self.partner, None
        if partner is not None:
            partner.partner = None
            partner.close()
        ft = self.five_tuple
        if ft is not None:
            self.relay.connections.pop(ft, None)
            if self.relay.core is not None:
                self.relay.core.connection_closed(ft, time.time())
                self.relay.rearm()
        self.transport = None


class TlsCertificate:
    """The TLS listeners' certificate, reloadable in place.

    Every TLS listener shares one :class:`ssl.SSLContext`; loading a chain into it again
    changes what new handshakes present, while established connections keep the
    certificate they were set up with (OpenSSL copies it into each connection). A new
    pair is first loaded into a throwaway context, so a half-written renewal (new
    certificate, old key) never reaches the live one.
    """

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(str(cert), str(key))
        self._stamp = self._files()

    def _files(self) -> tuple[tuple[int, int, int], ...]:
        """(inode, size, mtime) of both files, following symlinks (certbot's live/)."""
        stats = (os.stat(self.cert), os.stat(self.key))
        return tuple((st.st_ino, st.st_size, st.st_mtime_ns) for st in stats)

    def changed(self) -> bool:
        """Whether either file differs from what was last loaded (a missing file, as in
        the middle of a renewal, is not a change yet)."""
        try:
            return self._files() != self._stamp
        except OSError:
            return False

    def reload(self) -> None:
        """Load the files again; raises (OSError, ssl.SSLError) and keeps the old pair."""
        stamp = self._files()
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            str(self.cert), str(self.key)
        )
        self.context.load_cert_chain(str(self.cert), str(self.key))
        self._stamp = stamp


class _SocketAllocator:
    """Binds relay sockets in [min-port, max-port] on the relay addresses."""

    def __init__(self, relay: RelayServer, relay_ips: dict[int, str], public: dict[str, str]):
        self.relay = relay
        self.relay_ips = relay_ips
        self.public = public
        cfg = relay.config
        self.min_port = cfg.min_port
        self.max_port = cfg.max_port
        self.rng = random.Random(os.urandom(8))

    def _bind(self, family: int, *, even_port: bool, port: int | None) -> socket.socket:
        host = self.relay_ips.get(family)
        if host is None:
            raise CapacityError(f"no relay address of family {family}")
        af = socket.AF_INET if family == 4 else socket.AF_INET6
        sock = socket.socket(af, socket.SOCK_DGRAM)
        try:
            if family == 6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port is not None:
                if not self.min_port <= port <= self.max_port:
                    raise CapacityError("port outside the relay range")
                try:
                    sock.bind((host, port))
                except OSError as exc:
                    raise CapacityError(f"port {port} taken") from exc
            else:
                span = self.max_port - self.min_port + 1
                start = self.rng.randrange(span)
                for i in range(span):
                    candidate = self.min_port + (start + i) % span
                    if even_port and candidate % 2:
                        continue
                    try:
                        sock.bind((host, candidate))
                        break
                    except OSError:
                        continue
                else:
                    raise CapacityError("relay port range exhausted")
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def allocate_tcp(self, family: int, five_tuple: FiveTuple) -> tuple[Addr, TcpRelay]:
        host = self.relay_ips.get(family)
        if host is None:
            raise CapacityError(f"no relay address of family {family}")
        sock = socket.socket(socket.AF_INET if family == 4 else socket.AF_INET6)
        try:
            if family == 6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            # Bind exclusively (neither SO_REUSEADDR nor SO_REUSEPORT yet): the bind fails
            # on any port another socket holds, so two allocations, of this relay or of
            # another relay process, never share a relayed port (with SO_REUSEPORT set
            # before bind, a second listener would join the first and the kernel would
            # split the peers' connections between them).
            span = self.max_port - self.min_port + 1
            start = self.rng.randrange(span)
            for i in range(span):
                try:
                    sock.bind((host, self.min_port + (start + i) % span))
                    break
                except OSError:
                    continue
            else:
                raise CapacityError("relay port range exhausted")
            sock.listen(64)
            # Now the port is ours, let our own Connect sockets (RFC 6062 5.2: connections
            # to peers come from the relayed address) bind it too: see TcpRelay.connect.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        handle = TcpRelay(self.relay, sock, five_tuple)
        self.relay.loop.add_reader(sock.fileno(), handle.on_accept)
        self.relay.relay_sockets += 1
        bound = _host_port(sock.getsockname())
        return (self.public.get(bound[0], bound[0]), bound[1]), handle

    def reserve(self, family: int, port: int) -> socket.socket:
        return self._bind(family, even_port=False, port=port)

    def release_reservation(self, handle: socket.socket) -> None:
        handle.close()

    def allocate(
        self, family: int, five_tuple: FiveTuple, *, even_port: bool, port: int | None = None
    ) -> tuple[Addr, _RelaySocket]:
        sock = self._bind(family, even_port=even_port, port=port)
        bound = _host_port(sock.getsockname())
        advertised = (self.public.get(bound[0], bound[0]), bound[1])
        handle = _RelaySocket(self.relay, sock, five_tuple)
        try:
            self.relay.attach_client(handle, five_tuple)
        except CapacityError:
            sock.close()
            raise
        relay = self.relay
        relay.loop.add_reader(
            sock.fileno(),
            fastpath.drain_peer,
            sock,
            handle.routes,
            PEER_BATCH,
            relay.blocked,
            handle.on_slow,
        )
        relay.relay_sockets += 1
        return advertised, handle

    def release(self, handle: _RelaySocket | TcpRelay) -> None:
        if isinstance(handle, TcpRelay):
            handle.close()
            self.relay.relay_sockets -= 1
            return
        try:
            self.relay.forget_socket(handle.sock)
        finally:
            handle.sock.close()
            self.relay.relay_sockets -= 1


class RelayServer:
    """STUN/TURN over UDP, TCP and TLS (a :class:`visavis.service.Service`).

    :param config: this server's settings (the ``[relay]`` section).
    :param secret: the installation's shared secret, which checks REST credentials unless
        ``static-auth-secret`` is set (needed when ``use-auth-secret`` is on).
    :param metrics_registry: where to register the metrics (a fresh registry when None).
    :param user_lookup: optional ``name -> password`` for long-term users kept elsewhere.
    """

    name = "relay"

    def __init__(
        self,
        config: RelaySettings,
        *,
        secret: str | None = None,
        metrics_registry: CollectorRegistry | None = None,
        user_lookup: Callable[[str], str | None] | None = None,
    ) -> None:
        self.config = config
        self.secret = secret
        self.registry = metrics_registry if metrics_registry is not None else CollectorRegistry()
        self.user_lookup = user_lookup
        self.core: TurnServer | None = None
        self.handle_peer_data: Callable[[Allocation, Addr, bytes, float], bytes | None]
        self.connections: dict[FiveTuple, _StreamConnection] = {}
        self.peer_pipes: dict[int, PeerPipe] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.io_errors = 0
        self.send_queue_drops = 0
        self.relay_sockets = 0
        # sends that would block: filled by the fast path, then moved to per-socket queues
        self.blocked: list[tuple[socket.socket, bytes, Addr]] = []
        self._send_queues: dict[int, deque[tuple[bytes, Addr]]] = {}
        self.fast_table = fastpath.FastTable(self._listener_for)
        self._udp: list[_UdpListener] = []
        self._servers: list[asyncio.Server] = []
        self._ports: dict[str, int] = {}
        self._timer: asyncio.TimerHandle | None = None  # the sweep, see rearm
        self._armed_for = _NEVER  # the deadline (time.time() clock) _timer is set for
        self._cert_timer: asyncio.TimerHandle | None = None
        self.tls: TlsCertificate | None = None
        self._collector = RelayCollector(lambda: self.core, self._extra_metrics)
        self._registered = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._public: dict[str, str] = {}  # listening/relay address -> external-ip

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        metrics_registry: CollectorRegistry | None = None,
        user_lookup: Callable[[str], str | None] | None = None,
    ) -> RelayServer:
        """The relay of a whole visavis configuration: its ``[relay]`` section and the
        shared secret (generated into ``data_dir`` when unset)."""
        return cls(
            settings.relay,
            secret=settings.ensure_shared_secret(),
            metrics_registry=metrics_registry,
            user_lookup=user_lookup,
        )

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    @property
    def ports(self) -> dict[str, int]:
        """Bound ports by transport: ``{"udp": p, "tcp": p, "tls": p}`` (enabled ones)."""
        return dict(self._ports)

    def _extra_metrics(self) -> dict[str, int]:
        self.io_errors += fastpath.take_io_errors()
        return {"io-error": self.io_errors, "send-queue-full": self.send_queue_drops}

    def _listener_for(self, server: Addr) -> _UdpListener | None:
        for listener in self._udp:
            if listener.local == server:
                return listener
        return None

    # ------------------------------------------------------------------ sending
    def send(self, sock: socket.socket, data: bytes, addr: Addr) -> None:
        """``sendto`` now, or queue it behind earlier datagrams when the socket is full."""
        if self._send_queues:
            queue = self._send_queues.get(sock.fileno())
            if queue is not None:
                self._enqueue(sock, data, addr)
                return
        try:
            sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self._enqueue(sock, data, addr)
        except OSError:
            self.io_errors += 1

    def flush_blocked(self) -> None:
        """Queue the fast path's sends that would have blocked."""
        blocked = self.blocked[:]
        self.blocked.clear()  # the same list stays registered with every reader
        for sock, data, addr in blocked:
            self._enqueue(sock, data, addr)

    def _enqueue(self, sock: socket.socket, data: bytes, addr: Addr) -> None:
        fd = sock.fileno()
        if fd < 0:
            self.io_errors += 1
            return
        queue = self._send_queues.get(fd)
        if queue is None:
            queue = self._send_queues[fd] = deque()
            self.loop.add_writer(fd, self._drain_queue, sock, fd)
        if len(queue) >= MAX_SEND_QUEUE:
            self.send_queue_drops += 1
            return
        queue.append((data, addr))

    def _drain_queue(self, sock: socket.socket, fd: int) -> None:
        queue = self._send_queues.get(fd)
        while queue:
            data, addr = queue[0]
            try:
                sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.io_errors += 1
            queue.popleft()
        self._send_queues.pop(fd, None)
        self.loop.remove_writer(fd)

    def forget_socket(self, sock: socket.socket) -> None:
        """Stop watching a socket about to be closed (reader, writer and its queue)."""
        fd = sock.fileno()
        if fd < 0:
            return
        self.loop.remove_reader(fd)
        queue = self._send_queues.pop(fd, None)
        if queue is not None:
            self.send_queue_drops += len(queue)  # queued datagrams die with their socket
            self.loop.remove_writer(fd)

    # ------------------------------------------------------------------ building
    def _build_core(self) -> TurnServer:
        cfg = self.config
        secret: str | None = None
        if cfg.use_auth_secret:
            secret = (
                cfg.static_auth_secret.get_secret_value()
                if cfg.static_auth_secret is not None
                else self.secret
            )
            if secret is None:
                raise ValueError(
                    "use-auth-secret needs a secret: set relay.static_auth_secret or "
                    "shared_secret (VISAVIS_SHARED_SECRET)"
                )
        users = dict(parse_user_entry(u) for u in cfg.user) if cfg.lt_cred_mech else {}
        credentials = CredentialStore(cfg.realm, users, rest_secret=secret, lookup=self.user_lookup)
        allowed = list(cfg.allowed_peer_ip)
        if cfg.allow_loopback_peers:
            allowed += ["127.0.0.0/8", "::1/128"]
        policy = PeerPolicy(allowed=allowed, denied=cfg.denied_peer_ip)
        relay_ips = self._relay_ips()
        public: dict[str, str] = {}
        for entry in cfg.external_ip:
            pub, _, priv = entry.partition("/")
            if priv:
                public[priv.strip()] = pub.strip()
            else:
                version = ipaddress.ip_address(pub.strip()).version
                for fam, ip in relay_ips.items():
                    if fam == version:
                        public[ip] = pub.strip()
        turn_config = TurnConfig(
            realm=cfg.realm,
            software=None if cfg.no_software_attribute else "visavis",
            relay_families=frozenset(relay_ips),
            default_lifetime=cfg.default_allocate_lifetime,
            max_lifetime=cfg.max_allocate_lifetime,
            permission_lifetime=cfg.permission_lifetime,
            channel_lifetime=cfg.channel_lifetime,
            nonce_lifetime=cfg.stale_nonce,
            user_quota=cfg.user_quota,
            total_quota=cfg.total_quota,
            max_bps=cfg.max_bps,
            unauth_rate=cfg.unauth_rate,
            unauth_burst=cfg.unauth_burst,
        )
        self._public = public
        allocator = _SocketAllocator(self, relay_ips, public)
        return TurnServer(turn_config, credentials, policy, allocator)

    def _relay_ips(self) -> dict[int, str]:
        cfg = self.config
        out: dict[int, str] = {}
        for ip in cfg.relay_ip or cfg.listening_ip:
            version = ipaddress.ip_address(ip).version
            out.setdefault(version, ip)
        return out

    def attach_client(self, handle: _RelaySocket, ft: FiveTuple) -> None:
        """Tell a relay socket how to reach the client of ``ft``."""
        if ft.transport == "udp":
            for listener in self._udp:
                if listener.local == ft.server:
                    handle.client_sock = listener.sock
                    return
            raise CapacityError("no UDP listener for this five-tuple")
        conn = self.connections.get(ft)
        if conn is None:
            raise CapacityError("client connection is gone")
        handle.client_write = conn.write

    # ------------------------------------------------------------------ RelayHost
    def peer_arrived(self, five_tuple: FiveTuple, peer: Addr) -> int | None:
        """RFC 6062 5.3: a peer connected to a TCP allocation (see :class:`RelayHost`)."""
        core = self.core
        got = core.peer_connected(five_tuple, peer, time.time()) if core else None
        self.rearm()
        if got is None or core is None:
            return None
        cid, indication = got
        control = self.connections.get(five_tuple)
        if control is None:
            core.tcp_connection_closed(cid)
            return None
        control.write(indication)
        return cid

    def pipe_opened(self, pipe: PeerPipe) -> None:
        self.peer_pipes[pipe.connection_id] = pipe

    def pipe_closed(self, pipe: PeerPipe) -> None:
        self.peer_pipes.pop(pipe.connection_id, None)
        if self.core is not None:
            self.core.tcp_connection_closed(pipe.connection_id)

    def pipe(self, connection_id: int) -> PeerPipe | None:
        return self.peer_pipes.get(connection_id)

    def io_error(self) -> None:
        self.io_errors += 1

    def spawn(self, coro: Any) -> None:
        """Run a background task owned by this server (cancelled by :meth:`close`)."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def connect_peer(self, action: ConnectPeer, control: _StreamConnection) -> None:
        """RFC 6062 Connect: open the peer connection, answer on the control connection."""
        handle = action.handle
        ok = isinstance(handle, TcpRelay) and await handle.connect(action)
        if self.core is None:
            return
        response = self.core.connect_result(action.connection_id, ok, time.time())
        self.rearm()
        if response is not None:
            control.write(response)
        elif ok:
            pipe = self.peer_pipes.get(action.connection_id)
            if pipe is not None:
                pipe.close()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Bind the listeners (port 0 picks free ports)."""
        self._loop = asyncio.get_running_loop()
        self.core = self._build_core()
        self.core.observer = self.fast_table
        self.handle_peer_data = self.core.handle_peer_data
        cfg = self.config
        try:
            for host in cfg.listening_ip:
                port = self._ports.get("udp") or self._ports.get("tcp") or cfg.listening_port
                await self._bind_plain(host, port)
                if cfg.cert is not None and cfg.pkey is not None and not cfg.no_tls:
                    if self.tls is None:
                        self.tls = TlsCertificate(cfg.cert, cfg.pkey)
                    tls_port = self._ports.get("tls", cfg.tls_listening_port)
                    srv = await self.loop.create_server(
                        lambda: _StreamConnection(self, "tls"),
                        host,
                        tls_port,
                        ssl=self.tls.context,
                    )
                    self._servers.append(srv)
                    self._ports["tls"] = srv.sockets[0].getsockname()[1]
        except BaseException:
            await self.close()
            raise
        if not self._registered:
            self.registry.register(self._collector)
            self._registered = True
        if self.tls is not None:
            self._cert_timer = self.loop.call_later(CERT_CHECK_INTERVAL, self._check_cert)
        log.info("relay listening: %s", ", ".join(self.endpoints()))
        for host in cfg.listening_ip:
            if self._advertised(host) in ("127.0.0.1", "::1") and host in ("0.0.0.0", "::"):
                log.warning(
                    "relay listens on %s without external-ip: its URLs say %s, which only "
                    "this machine reaches; set relay.external_ip (--external-ip) or "
                    "signaling.turn_urls",
                    host,
                    self._advertised(host),
                )

    async def _bind_plain(self, host: str, port: int) -> None:
        cfg = self.config
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for attempt in range(20):
            udp: socket.socket | None = None
            try:
                if not cfg.no_udp:
                    udp = socket.socket(family, socket.SOCK_DGRAM)
                    if family == socket.AF_INET6:
                        udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    try:
                        udp.bind((host, port))
                    except OSError as exc:  # name the address, as asyncio's binds do
                        raise OSError(
                            exc.errno,
                            f"error while attempting to bind on address {(host, port)!r}: "
                            f"{exc.strerror}",
                        ) from exc
                    udp.setblocking(False)
                    _size_buffers(udp)
                bound_port = udp.getsockname()[1] if udp is not None else port
                if not cfg.no_tcp:
                    srv = await self.loop.create_server(
                        lambda: _StreamConnection(self, "tcp"), host, bound_port
                    )
                    self._servers.append(srv)
                    bound_port = srv.sockets[0].getsockname()[1]
                    self._ports["tcp"] = bound_port
            except OSError:
                if udp is not None:
                    udp.close()
                if port == 0 and attempt < 19:
                    continue  # the UDP port picked is taken for TCP: try another
                raise
            if udp is not None:
                listener = _UdpListener(self, udp)
                self._udp.append(listener)
                self.loop.add_reader(
                    udp.fileno(),
                    fastpath.drain_client,
                    udp,
                    listener.routes,
                    BATCH,
                    self.blocked,
                    listener.on_slow,
                )
                self._ports["udp"] = bound_port
            return

    def rearm(self) -> None:
        """Move the sweep timer earlier if the core's deadline now comes sooner (called
        after each call into the core that can add or shorten a deadline: a comparison)."""
        core = self.core
        if core is None:
            return
        due = core.next_deadline()
        if due is not None and due < self._armed_for:
            if self._timer is not None:
                self._timer.cancel()
            self._armed_for = due
            self._timer = self.loop.call_later(max(due - time.time(), 0.0), self._sweep)

    def _sweep(self) -> None:
        self._timer, self._armed_for = None, _NEVER
        self.io_errors += fastpath.take_io_errors()
        if self.core is not None:
            for cid in self.core.sweep(time.time()):
                pipe = self.peer_pipes.get(cid)
                if pipe is not None:
                    pipe.close()
            self.rearm()

    def reload(self) -> None:
        """What ``visavis serve`` does on SIGHUP: reload the TLS certificate."""
        self.reload_tls("SIGHUP")

    def reload_tls(self, reason: str) -> bool:
        """Load ``cert``/``pkey`` again: new TLS handshakes get the new certificate, open
        connections and their allocations stay as they are. Broken or mismatched files
        are refused (logged) and the previous certificate stays in use."""
        if self.tls is None:
            return False
        try:
            self.tls.reload()
        except (OSError, ssl.SSLError) as exc:
            log.error(
                "relay: cannot reload the TLS certificate (%s): %s; still serving the previous one",
                reason,
                exc,
            )
            return False
        log.info("relay: TLS certificate reloaded from %s (%s)", self.tls.cert, reason)
        return True

    def _check_cert(self) -> None:
        if self.tls is not None and self.tls.changed():
            self.reload_tls("file changed")
        self._cert_timer = self.loop.call_later(CERT_CHECK_INTERVAL, self._check_cert)

    async def close(self) -> None:
        """Stop listening, delete every allocation, close every socket."""
        for timer in (self._timer, self._cert_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._cert_timer = None
        self._armed_for = _NEVER
        for task in list(self._tasks):
            task.cancel()
        if self.core is not None:
            self.core.close()
        for pipe in list(self.peer_pipes.values()):
            pipe.close()
        for listener in self._udp:
            self.forget_socket(listener.sock)
            listener.sock.close()
        self._udp.clear()
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.abort()
        for srv in self._servers:
            srv.close()
        for srv in self._servers:
            await srv.wait_closed()
        self._servers.clear()
        if self._registered:
            self.registry.unregister(self._collector)
            self._registered = False

    def _advertised(self, host: str) -> str:
        """The address devices reach a listening address at: its ``external-ip`` (1:1
        NAT); for a wildcard, the external-ip of its family, else loopback (warned about
        at start)."""
        if host in self._public:
            return self._public[host]
        if host in ("0.0.0.0", "::"):
            family = ipaddress.ip_address(host).version
            for public in self._public.values():
                if ipaddress.ip_address(public).version == family:
                    return public
            return "::1" if family == 6 else "127.0.0.1"
        return host

    def endpoints(self) -> list[str]:
        """ICE URLs of this relay, e.g. ``turn:127.0.0.1:3478?transport=udp``: the public
        address (``external-ip``) of each listening address that has one."""
        out: list[str] = []
        for host in self.config.listening_ip:
            h = _url_host(self._advertised(host))
            if "udp" in self._ports:
                out.append(f"stun:{h}:{self._ports['udp']}")
                out.append(f"turn:{h}:{self._ports['udp']}?transport=udp")
            if "tcp" in self._ports:
                out.append(f"turn:{h}:{self._ports['tcp']}?transport=tcp")
            if "tls" in self._ports:
                out.append(f"turns:{h}:{self._ports['tls']}?transport=tcp")
        return out
