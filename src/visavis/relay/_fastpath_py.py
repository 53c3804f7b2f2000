"""Pure-Python twin of the native fast path (``_fastpath.c``), used when it is not built.

Same interface and semantics: ``drain_client``/``drain_peer`` (the ``loop.add_reader``
callbacks) read the clock and up to ``budget`` datagrams from a ready socket, forward those
matching a live :class:`Route` themselves (ChannelData on a bound channel with a valid
permission, in either direction), append a send that would block to ``blocked``, and call
``on_slow(slow, now)`` with everything else as ``(bytes, (host, port))`` for the core
(``slow`` None when there is nothing) when the core or the write queue has work. One
``recvfrom_into`` per datagram into a preallocated buffer; the drain stops at the first
EAGAIN.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable

NATIVE = 0

Addr = tuple[str, int]
Slow = list[tuple[bytes, Addr]]
Blocked = list[tuple[socket.socket, bytes, Addr]]
OnSlow = Callable[[Slow | None, float], None]

_BUF = bytearray(65536)
_VIEW = memoryview(_BUF)
_HEAD = struct.Struct("!HH")
_io_errors = 0
_force_eagain = 0


class Counters:
    """Per-allocation packet and byte counters of the fast path."""

    __slots__ = ("bytes_in", "bytes_out", "pkts_in", "pkts_out")

    def __init__(self) -> None:
        self.pkts_out = 0
        self.bytes_out = 0
        self.pkts_in = 0
        self.bytes_in = 0


class Route:
    """Where a fast-path packet goes: ``channel`` -1 strips the ChannelData header (client
    to peer), otherwise a header with that number is prepended (peer to client)."""

    __slots__ = ("addr", "channel", "counters", "expiry", "sock")

    def __init__(
        self,
        sock: socket.socket,
        host: str,
        port: int,
        channel: int,
        expiry: float,
        counters: Counters,
    ) -> None:
        self.sock = sock
        self.addr: Addr = (host, port)
        self.channel = channel
        self.expiry = expiry
        self.counters = counters


def client_key(host: str, port: int, channel: int) -> object | None:
    return (host, port, channel)


def peer_key(host: str, port: int) -> object | None:
    return (host, port)


def take_io_errors() -> int:
    global _io_errors
    n, _io_errors = _io_errors, 0
    return n


def set_force_eagain(n: int) -> None:
    global _force_eagain
    _force_eagain = n


def _send(route: Route, data: bytes, blocked: Blocked) -> None:
    global _io_errors, _force_eagain
    if _force_eagain > 0:
        _force_eagain -= 1
        blocked.append((route.sock, data, route.addr))
        return
    try:
        route.sock.sendto(data, route.addr)
    except (BlockingIOError, InterruptedError):
        blocked.append((route.sock, data, route.addr))
    except OSError:
        _io_errors += 1


def drain_client(
    sock: socket.socket, routes: dict[object, Route], budget: int, blocked: Blocked, on_slow: OnSlow
) -> None:
    global _io_errors
    now = time.time()
    slow: Slow | None = None
    recv = sock.recvfrom_into
    buf, view = _BUF, _VIEW
    for _ in range(budget):
        try:
            n, addr = recv(buf)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            _io_errors += 1
            continue
        if n >= 4 and 0x40 <= buf[0] <= 0x7F:
            number, length = _HEAD.unpack_from(buf)
            route = routes.get((addr[0], addr[1], number))
            if route is not None and route.expiry >= now and route.channel < 0 and length + 4 <= n:
                _send(route, bytes(view[4 : 4 + length]), blocked)
                c = route.counters
                c.pkts_out += 1
                c.bytes_out += length
                continue
        if slow is None:
            slow = []
        slow.append((bytes(view[:n]), (addr[0], addr[1])))
    if slow is not None or blocked:
        on_slow(slow, now)


def drain_peer(
    sock: socket.socket, routes: dict[object, Route], budget: int, blocked: Blocked, on_slow: OnSlow
) -> None:
    global _io_errors
    now = time.time()
    slow: Slow | None = None
    recv = sock.recvfrom_into
    buf, view = _BUF, _VIEW
    for _ in range(budget):
        try:
            n, addr = recv(buf)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            _io_errors += 1
            continue
        route = routes.get((addr[0], addr[1]))
        if route is not None and route.expiry >= now and route.channel >= 0 and n <= 0xFFFF:
            _send(route, _HEAD.pack(route.channel, n) + view[:n], blocked)
            c = route.counters
            c.pkts_in += 1
            c.bytes_in += n
            continue
        if slow is None:
            slow = []
        slow.append((bytes(view[:n]), (addr[0], addr[1])))
    if slow is not None or blocked:
        on_slow(slow, now)
