"""RFC 6062 TCP allocations, the I/O half: relay listeners, peer connections, pipes.

A TCP allocation listens on its relayed address (:class:`TcpRelay`). A peer connecting
there, or the relay connecting out for a Connect request (from the same address, with
``SO_REUSEPORT``), yields a :class:`PeerPipe` that stays paused until the client binds a
data connection to it (ConnectionBind); from then on bytes flow unchanged both ways, with
back-pressure (a full write buffer pauses the other side's reading).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Coroutine
from typing import Any, Protocol, cast

from visavis.protocol.turn import ConnectPeer, FiveTuple
from visavis.protocol.turn.allocation import Addr

CONNECT_TIMEOUT = 10.0


class RelayHost(Protocol):
    """What TCP allocations need from the relay server (:class:`RelayServer` is one):
    the TURN core's RFC 6062 verbs, the table of peer connections by CONNECTION-ID, the
    loop and task owner, and an error counter. Nothing else of the server is touched."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def peer_arrived(self, five_tuple: FiveTuple, peer: Addr) -> int | None:
        """A peer connected to this allocation: its CONNECTION-ID, with the client told
        (ConnectionAttempt); None if it may not (close it)."""
        ...

    def pipe_opened(self, pipe: PeerPipe) -> None: ...

    def pipe_closed(self, pipe: PeerPipe) -> None: ...

    def pipe(self, connection_id: int) -> PeerPipe | None: ...

    def io_error(self) -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...


class StreamTransport(Protocol):
    """What the relay uses of a connection's transport, whichever event loop made it.

    Typed by behaviour, never checked with ``isinstance``: uvloop's ``TCPTransport`` (what
    ``visavis serve`` runs on) is not a subclass of ``asyncio.Transport``.
    """

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def is_closing(self) -> bool: ...

    def get_write_buffer_size(self) -> int: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class Spliced(asyncio.Protocol):
    """One of two TCP connections spliced together (an RFC 6062 client data connection and
    its peer): when writing to this one backs up, its partner stops reading until it drains,
    so neither buffers without bound."""

    partner: Any

    def pause_writing(self) -> None:
        if self.partner is not None and self.partner.transport is not None:
            self.partner.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.partner is not None and self.partner.transport is not None:
            self.partner.transport.resume_reading()


class PeerPipe(Spliced):
    """The relay's TCP connection to a peer, identified by its CONNECTION-ID."""

    def __init__(self, relay: RelayHost, connection_id: int) -> None:
        self.relay = relay
        self.connection_id = connection_id
        self.transport: StreamTransport | None = None
        self.partner: Any = None  # the client's data connection once bound

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(StreamTransport, transport)
        self.transport.pause_reading()  # until ConnectionBind
        self.relay.pipe_opened(self)

    def data_received(self, data: bytes) -> None:
        partner = self.partner
        if partner is not None and partner.transport is not None:
            partner.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.pipe_closed(self)
        partner, self.partner = self.partner, None
        if partner is not None and partner.transport is not None:
            partner.transport.close()
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class TcpRelay:
    """The listening socket of a TCP allocation (the allocation's relay handle)."""

    def __init__(self, relay: RelayHost, sock: socket.socket, five_tuple: FiveTuple) -> None:
        self.relay = relay
        self.sock = sock
        self.five_tuple = five_tuple
        self.local: Addr = (sock.getsockname()[0], sock.getsockname()[1])
        self.pipes: set[int] = set()

    def on_accept(self) -> None:
        try:
            conn, addr = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.relay.io_error()
            return
        cid = self.relay.peer_arrived(self.five_tuple, (addr[0], addr[1]))
        if cid is None:
            conn.close()
            return
        conn.setblocking(False)
        self.pipes.add(cid)
        self.relay.spawn(self._adopt(conn, cid))

    async def _adopt(self, conn: socket.socket, cid: int) -> None:
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(lambda: PeerPipe(self.relay, cid), conn)

    async def connect(self, action: ConnectPeer) -> bool:
        """Open the Connect request's connection from our relayed address."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.local[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setblocking(False)
            try:
                sock.bind(self.local)
            except OSError:
                sock.bind((self.local[0], 0))  # the kernel refused the shared port
            await asyncio.wait_for(loop.sock_connect(sock, action.peer), CONNECT_TIMEOUT)
            self.pipes.add(action.connection_id)
            await loop.create_connection(
                lambda: PeerPipe(self.relay, action.connection_id), sock=sock
            )
            return True
        except (OSError, TimeoutError):
            sock.close()
            return False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.relay.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for cid in self.pipes:
            pipe = self.relay.pipe(cid)
            if pipe is not None:
                pipe.close()
        self.pipes.clear()
