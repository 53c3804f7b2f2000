"""Allocations lapse when they are due in the real ``visavis serve --role relay``.

The relay's only timer is armed for the TURN core's ``next_deadline()``. Three
allocations with a 2 s lifetime, made a third of a second apart, must each be gone
(their relayed port closed) within a bound of their expiry: under the former
one-second sweep, one of the three was always at least 2/3 s late.

A peer socket connected to each relayed address tells when it closed: while the relay
holds the port it drops the peer's probes (no permission), once the port is closed the
kernel answers with ICMP port unreachable and the probe socket reports ECONNREFUSED.
"""

from __future__ import annotations

import select
import socket
import time
from pathlib import Path

from tests.served import serve
from visavis.protocol.stun import (
    ErrorCodeAttr,
    MessageClass,
    Method,
    Nonce,
    Realm,
    RequestedTransport,
    Username,
    XorRelayedAddress,
    encode_message,
    long_term_key,
    parse_message,
)

LIFETIME = 2.0
LATE = 0.6  # seconds an expiry may be noticed late (process scheduling on a loaded machine)
REALM = "visavis.test"


def allocate(port: int, tid: int) -> tuple[socket.socket, tuple[str, int], float, float]:
    """One allocation over UDP: (client socket, relayed address, sent at, answered at)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = long_term_key("user", REALM, "pass")
    attrs: list = [RequestedTransport(17)]
    sock.send(encode_message(Method.ALLOCATE, MessageClass.REQUEST, tid.to_bytes(12, "big"), attrs))
    challenge = parse_message(sock.recv(2048))
    nonce = challenge.get(Nonce)
    assert nonce is not None, challenge
    attrs += [Username("user"), Realm(REALM), nonce]
    request = encode_message(
        Method.ALLOCATE, MessageClass.REQUEST, (tid + 1).to_bytes(12, "big"), attrs, key=key
    )
    sent = time.monotonic()
    sock.send(request)
    answer = parse_message(sock.recv(2048))
    answered = time.monotonic()
    assert answer.cls == MessageClass.SUCCESS, answer.get(ErrorCodeAttr)
    relayed = answer.get(XorRelayedAddress)
    assert relayed is not None
    return sock, (str(relayed.ip), relayed.port), sent, answered


def test_allocations_expire_when_due(tmp_path: Path) -> None:
    with serve(
        tmp_path / "data",
        "--role", "relay", "--listening-ip", "127.0.0.1", "--realm", REALM,
        "--lt-cred-mech", "--user", "user:pass", "--no-tcp", "--no-tls",
        env={"VISAVIS_RELAY__DEFAULT_ALLOCATE_LIFETIME": str(int(LIFETIME))},
    ) as server:  # fmt: skip
        url = server.url("relay", "turn:")
        port = int(url.split("?")[0].rsplit(":", 1)[1])
        clients: list[socket.socket] = []
        probes: dict[socket.socket, tuple[float, float]] = {}  # -> (sent, answered)
        closed: dict[socket.socket, float] = {}
        start = time.monotonic()
        try:
            # Allocate one every third of a second, probing every 10 ms until all are gone.
            while len(closed) < 3:
                now = time.monotonic()
                assert now < start + 3 * LIFETIME + 10, f"relayed ports still open: {probes}"
                if len(probes) < 3 and now >= start + len(probes) / 3:
                    client, relayed, sent, answered = allocate(port, 2 * len(probes) + 1)
                    clients.append(client)
                    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    peer.connect(relayed)
                    probes[peer] = (sent, answered)
                for peer in [p for p in probes if p not in closed]:
                    try:
                        peer.send(b"probe")
                    except ConnectionRefusedError:
                        closed[peer] = time.monotonic()
                ready, _, _ = select.select([p for p in probes if p not in closed], [], [], 0.01)
                for peer in ready:
                    try:
                        peer.recv(64)
                    except ConnectionRefusedError:
                        closed[peer] = time.monotonic()
        finally:
            for s in [*clients, *probes]:
                s.close()
        for peer, gone in closed.items():
            sent, answered = probes[peer]
            # Expired no earlier than its lifetime from the request, and promptly after.
            assert gone >= sent + LIFETIME - 0.05, (gone - sent, server.log())
            assert gone <= answered + LIFETIME + LATE, (gone - answered, server.log())
        assert "Traceback" not in server.log(), server.log()
