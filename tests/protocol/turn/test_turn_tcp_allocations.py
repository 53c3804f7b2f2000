"""RFC 6062 TCP allocations in the sans-I/O core: Connect, ConnectionAttempt,
ConnectionBind, timeouts and refusals."""

from __future__ import annotations

from ipaddress import ip_address

from turn_helpers import Client, error_code, make_server

from visavis.protocol.stun import (
    ChannelNumber,
    ConnectionId,
    MessageClass,
    Method,
    RequestedTransport,
    XorPeerAddress,
    parse_message,
)
from visavis.protocol.turn import Bound, ConnectPeer, FiveTuple

CONTROL = FiveTuple("tcp", ("198.51.100.7", 40000), ("192.0.2.1", 3478))
DATA = FiveTuple("tcp", ("198.51.100.7", 40001), ("192.0.2.1", 3478))
PEER = XorPeerAddress(ip_address("203.0.114.9"), 8080)


def tcp_allocation() -> tuple[Client, object]:
    server, _ = make_server()
    c = Client(server, ft=CONTROL)
    msg = c.request(Method.ALLOCATE, [RequestedTransport(6)])
    assert msg.cls == MessageClass.SUCCESS, error_code(msg)
    assert server.allocations[CONTROL].tcp
    return c, server


def raw_request(c: Client, method: int, attrs: list[object], ft: FiveTuple) -> object:
    from visavis.protocol.stun import MessageClass as MC
    from visavis.protocol.stun import Nonce, Realm, Username, encode_message

    full = [*attrs, Username(c.username), Realm("example.org"), Nonce(c.nonce or "")]
    data = encode_message(method, MC.REQUEST, c.tid(), full, key=c.key)  # type: ignore[arg-type]
    return c.server.handle_stun(data, ft, 1.0)


def test_client_initiated_connection() -> None:
    c, server = tcp_allocation()
    action = raw_request(c, Method.CONNECT, [PEER], CONTROL)
    assert isinstance(action, ConnectPeer) and action.peer == ("203.0.114.9", 8080)
    # The same peer again while connecting: 446.
    assert error_code(c.request(Method.CONNECT, [PEER])) == 446
    response = server.connect_result(action.connection_id, True, 2.0)  # type: ignore[attr-defined]
    msg = parse_message(response)
    assert msg.cls == MessageClass.SUCCESS and msg.check_integrity(c.key)
    assert msg.get(ConnectionId) == ConnectionId(action.connection_id)
    # The data connection binds it.
    bound = raw_request(c, Method.CONNECTION_BIND, [ConnectionId(action.connection_id)], DATA)
    assert isinstance(bound, Bound) and bound.connection_id == action.connection_id
    assert parse_message(bound.response).cls == MessageClass.SUCCESS
    # Binding twice fails.
    again = raw_request(c, Method.CONNECTION_BIND, [ConnectionId(action.connection_id)], DATA)
    assert isinstance(again, bytes) and error_code(parse_message(again)) == 400


def test_connect_failure_is_447() -> None:
    c, server = tcp_allocation()
    action = raw_request(c, Method.CONNECT, [PEER], CONTROL)
    assert isinstance(action, ConnectPeer)
    response = server.connect_result(action.connection_id, False, 2.0)  # type: ignore[attr-defined]
    assert error_code(parse_message(response)) == 447


def test_peer_initiated_connection_needs_permission() -> None:
    c, server = tcp_allocation()
    assert server.peer_connected(CONTROL, ("203.0.114.9", 5555), 1.0) is None  # type: ignore[attr-defined]
    c.request(Method.CREATE_PERMISSION, [PEER])
    got = server.peer_connected(CONTROL, ("203.0.114.9", 5555), 1.0)  # type: ignore[attr-defined]
    assert got is not None
    cid, indication = got
    ind = parse_message(indication)
    assert ind.method == Method.CONNECTION_ATTEMPT and ind.get(ConnectionId) == ConnectionId(cid)
    # Not bound within 30 s: the sweep reports it for closing.
    assert server.sweep(40.0) == [cid]  # type: ignore[attr-defined]


def test_refusals() -> None:
    c, server = tcp_allocation()
    forbidden = XorPeerAddress(ip_address("10.0.0.1"), 80)
    assert error_code(c.request(Method.CONNECT, [forbidden])) == 403
    assert error_code(c.request(Method.CHANNEL_BIND, [ChannelNumber(0x4000), PEER])) == 400
    udp_client = Client(server, ft=FiveTuple("udp", ("198.51.100.7", 1), ("192.0.2.1", 3478)))
    udp_client.request(Method.ALLOCATE, [RequestedTransport(17)])
    assert error_code(udp_client.request(Method.CONNECT, [PEER])) == 400
    unknown = raw_request(c, Method.CONNECTION_BIND, [ConnectionId(12345)], DATA)
    assert isinstance(unknown, bytes) and error_code(parse_message(unknown)) == 400
