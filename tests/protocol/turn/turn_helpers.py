"""A scripted TURN client and a fake relay allocator for the sans-I/O core tests."""

from __future__ import annotations

import itertools
from typing import Any

from visavis.protocol.stun import (
    Attribute,
    ErrorCodeAttr,
    Message,
    MessageClass,
    Nonce,
    Realm,
    Username,
    encode_message,
    long_term_key,
    parse_message,
)
from visavis.protocol.turn import (
    CapacityError,
    CredentialStore,
    FiveTuple,
    PeerPolicy,
    TurnConfig,
    TurnServer,
)

REALM = "example.org"
FT = FiveTuple("udp", ("198.51.100.7", 40000), ("192.0.2.1", 3478))


class FakeAllocator:
    def __init__(self, capacity: int = 100) -> None:
        self.capacity = capacity
        self.open: dict[int, tuple[int, FiveTuple]] = {}
        self._ports = itertools.count(50000)
        self.held: set[int] = set()

    def allocate(
        self, family: int, five_tuple: FiveTuple, *, even_port: bool, port: int | None = None
    ) -> tuple[Any, Any]:
        if len(self.open) >= self.capacity:
            raise CapacityError
        if port is None:
            port = next(self._ports)
            while (even_port and port % 2) or port in self.held:
                port = next(self._ports)
        elif port in self.open:
            raise CapacityError
        self.open[port] = (family, five_tuple)
        host = "192.0.2.1" if family == 4 else "2001:db8::1"
        return (host, port), port

    def release(self, handle: Any) -> None:
        del self.open[handle]

    def allocate_tcp(self, family: int, five_tuple: FiveTuple) -> tuple[Any, Any]:
        return self.allocate(family, five_tuple, even_port=False)

    def reserve(self, family: int, port: int) -> Any:
        if port in self.held or port in self.open:
            raise CapacityError
        self.held.add(port)
        return port

    def release_reservation(self, handle: Any) -> None:
        self.held.remove(handle)


def make_server(**config: Any) -> tuple[TurnServer, FakeAllocator]:
    allocator = FakeAllocator(config.pop("capacity", 100))
    creds = CredentialStore(
        REALM, {"alice": "secret", "bob": "hunter2"}, rest_secret=config.pop("rest_secret", None)
    )
    policy = PeerPolicy(allowed=config.pop("allowed", ()), denied=config.pop("denied", ()))
    counter = itertools.count(1)
    server = TurnServer(
        TurnConfig(realm=REALM, **config),
        creds,
        policy,
        allocator,
        random_bytes=lambda n: next(counter).to_bytes(n, "big"),
    )
    return server, allocator


class Client:
    """Drives the core like a TURN client would, transaction by transaction."""

    def __init__(
        self,
        server: TurnServer,
        username: str = "alice",
        password: str = "secret",
        ft: FiveTuple = FT,
    ) -> None:
        self.server = server
        self.username = username
        self.password = password
        self.ft = ft
        self.nonce: str | None = None
        self._tids = itertools.count(1)

    def tid(self) -> bytes:
        return next(self._tids).to_bytes(12, "big")

    @property
    def key(self) -> bytes:
        return long_term_key(self.username, REALM, self.password)

    def raw(self, data: bytes, now: float = 0.0) -> Any:
        return self.server.handle_stun(data, self.ft, now)

    def request(
        self,
        method: int,
        attrs: list[Attribute],
        now: float = 0.0,
        *,
        auth: bool = True,
        tid: bytes | None = None,
    ) -> Message:
        """Send a request (retrying once after a 401/438 challenge); return the answer."""
        tid = tid or self.tid()
        for _ in range(2):
            if auth and self.nonce is not None:
                full = [*attrs, Username(self.username), Realm(REALM), Nonce(self.nonce)]
                data = encode_message(method, MessageClass.REQUEST, tid, full, key=self.key)
            else:
                data = encode_message(method, MessageClass.REQUEST, tid, attrs)
            out = self.server.handle_stun(data, self.ft, now)
            assert isinstance(out, bytes), out
            msg = parse_message(out)
            err = msg.get(ErrorCodeAttr)
            if auth and err is not None and err.code in (401, 438) and msg.get(Nonce):
                nonce = msg.get(Nonce)
                assert nonce is not None
                if self.nonce == nonce.value and err.code == 401:
                    return msg
                self.nonce = nonce.value
                continue
            return msg
        return msg


def error_code(msg: Message) -> int | None:
    err = msg.get(ErrorCodeAttr)
    return None if err is None else err.code
