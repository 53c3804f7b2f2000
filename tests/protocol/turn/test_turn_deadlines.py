"""The core's timer contract: ``next_deadline()`` covers everything that lapses.

The relay arms its only timer from ``next_deadline()`` (no periodic sweep), so anything
timed that the deadline missed would outlive its expiry. The reference below computes
the true earliest deadline from the core's state; the tests check that the core's value
is never later, that a sweep at that time does the work, and that a relay driven only by
the deadline expires things when they are due.
"""

from __future__ import annotations

import random
from ipaddress import ip_address

from turn_helpers import FT, REALM, Client, make_server

from visavis.protocol.stun import (
    ChannelNumber,
    EvenPort,
    Lifetime,
    MessageClass,
    Method,
    Nonce,
    Realm,
    RequestedTransport,
    Username,
    XorPeerAddress,
    encode_message,
)
from visavis.protocol.turn import ConnectPeer, FiveTuple, TurnServer
from visavis.protocol.turn.server import BIND_TIMEOUT, RESERVATION_LIFETIME

UDP = [RequestedTransport(17)]
PEER = XorPeerAddress(ip_address("203.0.114.9"), 5000)
INF = float("inf")


def true_deadline(server: TurnServer) -> float:
    """The earliest instant at which some state of ``server`` lapses (inf: none)."""
    times = [a.next_deadline() for a in server.allocations.values()]
    times += [r[3] for r in server.reservations.values()]
    times += [c.expiry for c in server.tcp_connections.values()]
    return min(times, default=INF)


def deadline(server: TurnServer) -> float:
    due = server.next_deadline()
    return INF if due is None else due


def test_idle_core_has_no_deadline() -> None:
    server, _ = make_server()
    assert server.next_deadline() is None


def test_rate_limit_state_is_dropped_on_its_own_deadline() -> None:
    server, _ = make_server(unauth_rate=20, unauth_burst=40)
    c = Client(server)
    c.request(Method.BINDING, [], now=5.0)
    assert server.next_deadline() == 7.0  # a bucket refills completely in burst/rate = 2 s
    server.sweep(7.0)
    assert not server._unauth  # the idle bucket is gone...
    assert server.next_deadline() is None  # ...and nothing else is timed


def test_allocation_permission_channel_reservation_deadlines() -> None:
    server, alloc = make_server()
    c = Client(server)
    msg = c.request(Method.ALLOCATE, [*UDP, Lifetime(3600)], now=0.0)
    assert msg.cls == MessageClass.SUCCESS
    server.sweep(2.0)  # drop the challenge's rate-limit bucket
    assert server.next_deadline() == 3600.0
    assert c.request(Method.CREATE_PERMISSION, [PEER], now=10.0).cls == MessageClass.SUCCESS
    assert server.next_deadline() == 310.0
    c.request(Method.CHANNEL_BIND, [ChannelNumber(0x4000), PEER], now=20.0)
    # The bind refreshed the permission to 320: the bound may stay early (310)...
    assert deadline(server) <= true_deadline(server) == 320.0
    server.sweep(310.0)  # ...and a sweep then finds nothing, and sets the exact value
    assert server.next_deadline() == 320.0 and server.allocations[FT].permissions
    server.sweep(320.0)
    assert not server.allocations[FT].permissions
    assert server.next_deadline() == 620.0  # the channel
    server.sweep(620.0)
    assert not server.allocations[FT].channels
    # A refresh that shortens the lifetime brings the deadline forward at once.
    c.request(Method.REFRESH, [Lifetime(600)], now=700.0)
    assert deadline(server) <= 1300.0
    server.sweep(702.0)  # (the stale nonce's 438 challenge made a rate-limit bucket)
    assert server.next_deadline() == 1300.0
    server.sweep(1300.0)
    assert not server.allocations and not alloc.open
    # An EVEN-PORT reservation lapses after 30 s.
    c2 = Client(server, ft=FiveTuple("udp", ("198.51.100.7", 40001), FT.server))
    c2.request(Method.ALLOCATE, [*UDP, EvenPort(reserve=True)], now=2000.0)
    assert server.reservations
    assert deadline(server) <= 2000.0 + RESERVATION_LIFETIME
    server.sweep(2000.0 + RESERVATION_LIFETIME)
    assert not server.reservations and not alloc.held


def test_unbound_peer_connection_lapses_at_its_deadline() -> None:
    server, _ = make_server()
    control = FiveTuple("tcp", ("198.51.100.7", 40000), ("192.0.2.1", 3478))
    c = Client(server, ft=control)
    assert c.request(Method.ALLOCATE, [RequestedTransport(6)], now=0.0).cls == MessageClass.SUCCESS
    c.request(Method.CREATE_PERMISSION, [PEER], now=0.0)
    server.sweep(2.0)
    # A peer connects and is never bound: closed by the sweep at the bind deadline.
    got = server.peer_connected(control, ("203.0.114.9", 6000), 100.0)
    assert got is not None
    assert server.next_deadline() == 100.0 + BIND_TIMEOUT
    assert server.sweep(100.0 + BIND_TIMEOUT) == [got[0]]


def test_connection_of_a_deleted_tcp_allocation_is_closed_at_once() -> None:
    server, _ = make_server()
    control = FiveTuple("tcp", ("198.51.100.7", 40000), ("192.0.2.1", 3478))
    c = Client(server, ft=control)
    c.request(Method.ALLOCATE, [RequestedTransport(6)], now=0.0)
    c.request(Method.CREATE_PERMISSION, [PEER], now=0.0)
    got = server.peer_connected(control, ("203.0.114.9", 6000), 1.0)
    assert got is not None
    server.tcp_connections[got[0]].expiry = INF  # as if bound
    server.sweep(3.0)
    assert server.next_deadline() == 300.0  # the permission
    server.connection_closed(control, 4.0)
    due = server.next_deadline()
    assert due is not None and due <= 4.0  # sweep now, not at some later deadline
    assert server.sweep(4.0) == [got[0]]


def test_connect_sets_bind_deadline() -> None:
    server, _ = make_server()
    control = FiveTuple("tcp", ("198.51.100.7", 40000), ("192.0.2.1", 3478))
    c = Client(server, ft=control)
    c.request(Method.ALLOCATE, [RequestedTransport(6)], now=0.0)
    server.sweep(2.0)
    attrs = [PEER, Username("alice"), Realm(REALM), Nonce(c.nonce or "")]
    data = encode_message(Method.CONNECT, MessageClass.REQUEST, c.tid(), attrs, key=c.key)
    action = server.handle_stun(data, control, 50.0)
    assert isinstance(action, ConnectPeer)
    assert server.next_deadline() == 50.0 + BIND_TIMEOUT
    server.connect_result(action.connection_id, True, 55.0)
    assert deadline(server) <= 55.0 + BIND_TIMEOUT
    assert server.sweep(55.0 + BIND_TIMEOUT) == [action.connection_id]


def test_random_operations_never_outlive_the_deadline() -> None:
    """Random requests at random times, the core driven only by its deadline: the bound
    never exceeds the true deadline, and nothing is alive past its expiry."""
    rng = random.Random(1234)
    server, _ = make_server(max_lifetime=3600)
    clients = [
        Client(server, ft=FiveTuple("udp", ("198.51.100.7", 41000 + i), FT.server))
        for i in range(6)
    ]
    now = 0.0
    for _ in range(400):
        now += rng.choice([0.5, 3.0, 40.0, 150.0])
        # Fire the timer as the relay would, for every deadline up to now.
        for _ in range(1000):
            due = server.next_deadline()
            if due is None or due > now:
                break
            server.sweep(due)
            assert true_deadline(server) > due  # everything due was expired
        else:
            raise AssertionError("the deadline did not advance")
        c = rng.choice(clients)
        op = rng.randrange(5)
        peer = XorPeerAddress(ip_address("203.0.114.9"), 5000 + rng.randrange(3))
        if op == 0:
            c.request(Method.ALLOCATE, [*UDP, Lifetime(rng.choice([600, 900, 3600]))], now)
        elif op == 1:
            c.request(Method.REFRESH, [Lifetime(rng.choice([0, 600, 1200]))], now)
        elif op == 2:
            c.request(Method.CREATE_PERMISSION, [peer], now)
        elif op == 3:
            c.request(Method.CHANNEL_BIND, [ChannelNumber(0x4000 + peer.port - 5000), peer], now)
        else:
            c.request(Method.ALLOCATE, [*UDP, EvenPort(reserve=True)], now)
        assert deadline(server) <= true_deadline(server)
