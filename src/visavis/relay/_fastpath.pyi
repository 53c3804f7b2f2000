import socket
from collections.abc import Callable

NATIVE: int

class Counters:
    pkts_out: int
    bytes_out: int
    pkts_in: int
    bytes_in: int

class Route:
    sock: socket.socket
    channel: int
    expiry: float
    counters: Counters
    @property
    def addr(self) -> tuple[str, int]: ...
    def __init__(
        self,
        sock: socket.socket,
        host: str,
        port: int,
        channel: int,
        expiry: float,
        counters: Counters,
    ) -> None: ...

Slow = list[tuple[bytes, tuple[str, int]]]
Blocked = list[tuple[socket.socket, bytes, tuple[str, int]]]

OnSlow = Callable[[Slow | None, float], None]

def drain_client(
    sock: socket.socket, routes: dict[object, Route], budget: int, blocked: Blocked, on_slow: OnSlow
) -> None: ...
def drain_peer(
    sock: socket.socket, routes: dict[object, Route], budget: int, blocked: Blocked, on_slow: OnSlow
) -> None: ...
def client_key(host: str, port: int, channel: int) -> object | None: ...
def peer_key(host: str, port: int) -> object | None: ...
def take_io_errors() -> int: ...
def set_force_eagain(n: int) -> None: ...
