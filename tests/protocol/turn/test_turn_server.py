"""The sans-I/O TURN core: allocation life cycle, auth, permissions, channels, errors."""

from __future__ import annotations

import base64
import hashlib
import hmac
from ipaddress import ip_address

import pytest
from turn_helpers import FT, REALM, Client, error_code, make_server

from visavis.protocol.stun import (
    AdditionalAddressFamily,
    AddressErrorCode,
    ChannelNumber,
    Data,
    DontFragment,
    EvenPort,
    Lifetime,
    MessageClass,
    MessageIntegrity,
    Method,
    Nonce,
    PasswordAlgorithm,
    PasswordAlgorithmId,
    PasswordAlgorithms,
    RawAttribute,
    Realm,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
    Userhash,
    Username,
    XorMappedAddress,
    XorPeerAddress,
    XorRelayedAddress,
    encode_message,
    long_term_key,
    parse_message,
    userhash,
)
from visavis.protocol.turn import FiveTuple, Forward, encode_channel_data, rest_credentials
from visavis.protocol.turn.server import ADVERTISED_ALGORITHMS

UDP = [RequestedTransport(17)]
PEER = XorPeerAddress(ip_address("203.0.114.9"), 5000)  # a global address


def allocate(client: Client, now: float = 0.0) -> XorRelayedAddress:
    msg = client.request(Method.ALLOCATE, list(UDP), now)
    assert msg.cls == MessageClass.SUCCESS, error_code(msg)
    relayed = msg.get(XorRelayedAddress)
    assert relayed is not None
    return relayed


def test_unauthenticated_allocate_is_challenged() -> None:
    server, _ = make_server()
    c = Client(server)
    msg = c.request(Method.ALLOCATE, list(UDP), auth=False)
    assert error_code(msg) == 401
    assert msg.get(Realm) == Realm(REALM)
    nonce = msg.get(Nonce)
    assert nonce is not None and nonce.value.startswith("obMatJos2")
    assert msg.get(PasswordAlgorithms) is not None
    assert msg.get(MessageIntegrity) is None


def test_allocate_success_and_retransmission() -> None:
    server, alloc = make_server()
    c = Client(server)
    tid = c.tid()
    msg = c.request(Method.ALLOCATE, list(UDP), tid=tid)
    assert msg.cls == MessageClass.SUCCESS
    assert msg.check_integrity(c.key)
    assert msg.get(XorMappedAddress) == XorMappedAddress(ip_address(FT.client[0]), FT.client[1])
    assert msg.get(Lifetime) == Lifetime(600)
    assert len(alloc.open) == 1
    again = c.request(Method.ALLOCATE, list(UDP), tid=tid)
    assert again.raw == msg.raw  # retransmission: same answer, no second relay
    assert len(alloc.open) == 1
    assert error_code(c.request(Method.ALLOCATE, list(UDP))) == 437


def test_wrong_password_and_unknown_user_get_401() -> None:
    server, _ = make_server()
    assert error_code(Client(server, password="nope").request(Method.ALLOCATE, list(UDP))) == 401
    assert error_code(Client(server, "mallory").request(Method.ALLOCATE, list(UDP))) == 401
    assert server.stats.auth_failures["bad-integrity"] == 1
    assert server.stats.auth_failures["unknown-user"] == 1


def test_stale_nonce_gets_438_then_succeeds() -> None:
    server, _ = make_server(nonce_lifetime=600)
    c = Client(server)
    allocate(c, now=0)
    stale = c.server.handle_stun(
        encode_message(
            Method.REFRESH,
            MessageClass.REQUEST,
            c.tid(),
            [Username("alice"), Realm(REALM), Nonce(c.nonce or "")],
            key=c.key,
        ),
        FT,
        1000.0,
    )
    assert isinstance(stale, bytes)
    assert error_code(parse_message(stale)) == 438
    assert c.request(Method.REFRESH, [], now=1000.0).cls == MessageClass.SUCCESS


def test_sha256_and_userhash() -> None:
    server, _ = make_server()
    c = Client(server)
    first = c.request(Method.ALLOCATE, list(UDP), auth=False)
    nonce = first.get(Nonce)
    assert nonce is not None
    key = long_term_key("alice", REALM, "secret", PasswordAlgorithmId.SHA256)
    data = encode_message(
        Method.ALLOCATE,
        MessageClass.REQUEST,
        c.tid(),
        [
            *UDP,
            Userhash(userhash("alice", REALM)),
            Realm(REALM),
            nonce,
            PasswordAlgorithms(ADVERTISED_ALGORITHMS),
            PasswordAlgorithm(PasswordAlgorithmId.SHA256),
        ],
        key=key,
        integrity="sha256",
    )
    out = server.handle_stun(data, FT, 0.0)
    assert isinstance(out, bytes)
    msg = parse_message(out)
    assert msg.cls == MessageClass.SUCCESS
    assert msg.check_integrity(key) and msg.integrity_sha256_offset > 0


def test_downgraded_algorithm_list_is_refused() -> None:
    server, _ = make_server()
    c = Client(server)
    nonce = c.request(Method.ALLOCATE, list(UDP), auth=False).get(Nonce)
    assert nonce is not None
    data = encode_message(
        Method.ALLOCATE,
        MessageClass.REQUEST,
        c.tid(),
        [
            *UDP,
            Username("alice"),
            Realm(REALM),
            nonce,
            PasswordAlgorithms(ADVERTISED_ALGORITHMS[:1]),
            PasswordAlgorithm(PasswordAlgorithmId.MD5),
        ],
        key=c.key,
    )
    out = server.handle_stun(data, FT, 0.0)
    assert isinstance(out, bytes) and error_code(parse_message(out)) == 400


def test_rest_credentials() -> None:
    server, _ = make_server(rest_secret="s3cret")
    user, password = rest_credentials("s3cret", "carol", now=1000, ttl=3600)
    assert user == "4600:carol"
    expected = base64.b64encode(hmac.new(b"s3cret", b"4600:carol", hashlib.sha1).digest())
    assert password == expected.decode()
    c = Client(server, user, password)
    allocate(c, now=1000)
    assert server.per_account["carol"] == 1
    late = Client(server, user, password, FiveTuple("udp", ("198.51.100.8", 1), FT.server))
    assert error_code(late.request(Method.ALLOCATE, list(UDP), now=5000)) == 401


def test_refresh_and_expiry() -> None:
    server, alloc = make_server()
    c = Client(server)
    allocate(c)
    msg = c.request(Method.REFRESH, [Lifetime(1200)], now=100)
    assert msg.get(Lifetime) == Lifetime(1200)
    server.sweep(1299)
    assert FT in server.allocations
    server.sweep(1301)
    assert FT not in server.allocations and not alloc.open
    assert error_code(c.request(Method.REFRESH, [], now=1302)) == 437


def test_refresh_zero_deletes() -> None:
    server, alloc = make_server()
    c = Client(server)
    allocate(c)
    assert c.request(Method.REFRESH, [Lifetime(0)]).get(Lifetime) == Lifetime(0)
    assert not server.allocations and not alloc.open


def test_wrong_user_on_existing_allocation_gets_441() -> None:
    server, _ = make_server()
    allocate(Client(server))
    assert error_code(Client(server, "bob", "hunter2").request(Method.REFRESH, [])) == 441


def test_quotas_and_capacity() -> None:
    server, _ = make_server(user_quota=1, total_quota=2, capacity=10)
    allocate(Client(server))
    other = FiveTuple("udp", ("198.51.100.7", 40001), FT.server)
    assert error_code(Client(server, ft=other).request(Method.ALLOCATE, list(UDP))) == 486
    allocate(Client(server, "bob", "hunter2", ft=other))
    third = FiveTuple("udp", ("198.51.100.7", 40002), FT.server)
    assert error_code(Client(server, "bob", "hunter2", third).request(Method.ALLOCATE, UDP)) == 486
    server2, _ = make_server(capacity=0)
    assert error_code(Client(server2).request(Method.ALLOCATE, list(UDP))) == 508


def test_transport_and_family_checks() -> None:
    server, _ = make_server()
    c = Client(server)
    assert error_code(c.request(Method.ALLOCATE, [])) == 400
    assert error_code(c.request(Method.ALLOCATE, [RequestedTransport(99)])) == 442
    assert error_code(c.request(Method.ALLOCATE, [RequestedTransport(6)])) == 400  # TCP over UDP
    assert error_code(c.request(Method.ALLOCATE, [*UDP, RequestedAddressFamily(2)])) == 440
    assert error_code(c.request(Method.ALLOCATE, [*UDP, DontFragment()])) == 420
    msg = c.request(Method.ALLOCATE, [*UDP, RawAttribute(0x7777, b"x")])
    assert error_code(msg) == 420 and msg.check_integrity(c.key)


def test_dual_allocation() -> None:
    server, _ = make_server(relay_families=frozenset({4, 6}))
    msg = Client(server).request(Method.ALLOCATE, [*UDP, AdditionalAddressFamily(2)])
    assert msg.cls == MessageClass.SUCCESS
    assert {a.ip.version for a in msg.get_all(XorRelayedAddress)} == {4, 6}
    server4, _ = make_server()
    msg = Client(server4).request(Method.ALLOCATE, [*UDP, AdditionalAddressFamily(2)])
    assert msg.cls == MessageClass.SUCCESS
    err = msg.get(AddressErrorCode)
    assert err is not None and err.code == 440 and err.family == 2


def test_permission_channel_and_relay_paths() -> None:
    server, _ = make_server()
    c = Client(server)
    allocate(c)
    # Without permission nothing is relayed.
    send = encode_message(Method.SEND, MessageClass.INDICATION, c.tid(), [PEER, Data(b"hi")])
    assert server.handle_stun(send, FT, 1) is None
    assert c.request(Method.CREATE_PERMISSION, [PEER], now=1).cls == MessageClass.SUCCESS
    fwd = server.handle_stun(send, FT, 2)
    assert isinstance(fwd, Forward) and fwd.peer == ("203.0.114.9", 5000) and fwd.data == b"hi"
    alloc = server.allocations[FT]
    # Peer -> client without a channel: a Data indication.
    out = server.handle_peer_data(alloc, ("203.0.114.9", 5000), b"yo", 3)
    assert out is not None
    ind = parse_message(out)
    assert ind.method == Method.DATA and ind.get(Data) == Data(b"yo")
    # Another IP has no permission.
    assert server.handle_peer_data(alloc, ("203.0.114.10", 5000), b"yo", 3) is None
    # Channel.
    bind = c.request(Method.CHANNEL_BIND, [ChannelNumber(0x4001), PEER], now=4)
    assert bind.cls == MessageClass.SUCCESS
    fwd = server.handle_channel_data(encode_channel_data(0x4001, b"abc"), FT, 5)
    assert fwd is not None and fwd.data == b"abc"
    assert server.handle_peer_data(alloc, ("203.0.114.9", 5000), b"xyz", 6) == (
        b"\x40\x01\x00\x03xyz"
    )
    assert server.handle_channel_data(encode_channel_data(0x4002, b"abc"), FT, 5) is None
    # Rebinding rules.
    other = XorPeerAddress(ip_address("203.0.114.9"), 5001)
    assert error_code(c.request(Method.CHANNEL_BIND, [ChannelNumber(0x4001), other])) == 400
    assert error_code(c.request(Method.CHANNEL_BIND, [ChannelNumber(0x4002), PEER])) == 400
    assert error_code(c.request(Method.CHANNEL_BIND, [ChannelNumber(0x3FFF), other])) == 400
    # Permission lasts 300 s from the ChannelBind at t=4, the channel 600 s.
    assert server.handle_channel_data(encode_channel_data(0x4001, b"a"), FT, 303) is not None
    assert server.handle_channel_data(encode_channel_data(0x4001, b"a"), FT, 305) is None
    c.request(Method.CREATE_PERMISSION, [PEER], now=306)
    assert server.handle_channel_data(encode_channel_data(0x4001, b"a"), FT, 600) is not None
    server.sweep(605)
    assert server.handle_channel_data(encode_channel_data(0x4001, b"a"), FT, 605) is None
    assert server.handle_peer_data(alloc, ("203.0.114.9", 5000), b"z", 605) is not None


def test_stream_transport_pads_channel_data() -> None:
    server, _ = make_server()
    ft = FiveTuple("tcp", ("198.51.100.7", 40000), ("192.0.2.1", 3478))
    c = Client(server, ft=ft)
    allocate(c)
    c.request(Method.CHANNEL_BIND, [ChannelNumber(0x4000), PEER])
    out = server.handle_peer_data(server.allocations[ft], ("203.0.114.9", 5000), b"12345", 1)
    assert out == b"\x40\x00\x00\x0512345\x00\x00\x00"


def test_bandwidth_cap() -> None:
    server, _ = make_server(max_bps=1000)
    c = Client(server)
    allocate(c)
    c.request(Method.CHANNEL_BIND, [ChannelNumber(0x4000), PEER])
    frame = encode_channel_data(0x4000, b"x" * 400)
    sent = sum(server.handle_channel_data(frame, FT, 1.0) is not None for _ in range(10))
    assert sent == 2  # 1000 bytes of burst
    assert server.handle_channel_data(frame, FT, 1.5) is not None  # refilled 500 bytes


def test_binding_and_malformed() -> None:
    server, _ = make_server()
    c = Client(server)
    req = encode_message(Method.BINDING, MessageClass.REQUEST, c.tid(), [])
    out = c.raw(req)
    assert isinstance(out, bytes)
    assert parse_message(out).get(XorMappedAddress) == XorMappedAddress(
        ip_address(FT.client[0]), FT.client[1]
    )
    bad = bytearray(encode_message(Method.BINDING, MessageClass.REQUEST, c.tid(), [Lifetime(5)]))
    bad[23] = 3  # LIFETIME length 3: malformed
    out = c.raw(bytes(bad))
    assert isinstance(out, bytes) and error_code(parse_message(out)) == 400
    assert c.raw(b"\x00\x01garbage") is None
    assert server.stats.dropped["malformed"] == 2


@pytest.mark.parametrize("size_attrs", [0, 1])
def test_no_amplification(size_attrs: int) -> None:
    server, _ = make_server()
    c = Client(server)
    attrs = list(UDP)[:size_attrs]
    req = encode_message(Method.ALLOCATE, MessageClass.REQUEST, c.tid(), attrs)
    out = c.raw(req)
    assert out is None or len(out) <= 4 * len(req)


def test_unauthenticated_rate_limit() -> None:
    server, _ = make_server(unauth_rate=10, unauth_burst=20)
    c = Client(server)
    answered = 0
    for _ in range(100):
        req = encode_message(Method.ALLOCATE, MessageClass.REQUEST, c.tid(), list(UDP))
        answered += c.raw(req, now=5.0) is not None
    assert answered == 20
    assert server.stats.dropped["rate-limited"] == 80
    # Another client IP is unaffected.
    other = Client(server, ft=FiveTuple("udp", ("198.51.100.99", 1), FT.server))
    assert error_code(other.request(Method.ALLOCATE, list(UDP), auth=False, now=5.0)) == 401


def test_even_port_reservation() -> None:
    server, alloc = make_server()
    c = Client(server)
    msg = c.request(Method.ALLOCATE, [*UDP, EvenPort(reserve=True)])
    assert msg.cls == MessageClass.SUCCESS
    relayed = msg.get(XorRelayedAddress)
    token = msg.get(ReservationToken)
    assert relayed is not None and relayed.port % 2 == 0 and token is not None
    assert relayed.port + 1 in alloc.held
    other = Client(server, ft=FiveTuple("udp", ("198.51.100.7", 40001), FT.server))
    msg2 = other.request(Method.ALLOCATE, [*UDP, token])
    assert msg2.cls == MessageClass.SUCCESS
    relayed2 = msg2.get(XorRelayedAddress)
    assert relayed2 is not None and relayed2.port == relayed.port + 1
    assert not alloc.held
    # A token works once; unknown tokens get 508.
    third = Client(server, ft=FiveTuple("udp", ("198.51.100.7", 40002), FT.server))
    assert error_code(third.request(Method.ALLOCATE, [*UDP, token])) == 508


def test_reservation_expires() -> None:
    server, alloc = make_server()
    c = Client(server)
    c.request(Method.ALLOCATE, [*UDP, EvenPort(reserve=True)])
    assert alloc.held
    server.sweep(31.0)
    assert not alloc.held
