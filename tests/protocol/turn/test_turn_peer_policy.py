"""Secure by default: relaying to special-purpose addresses is refused with 403, whatever
the encoding of the address (IPv4-mapped, -compatible, NAT64, 6to4, Teredo)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from turn_helpers import Client, error_code, make_server

from visavis.protocol.stun import (
    ChannelNumber,
    ErrorCodeAttr,
    Method,
    RequestedTransport,
    XorPeerAddress,
)
from visavis.protocol.turn import PeerPolicy, embedded_ipv4

DENIED_V4 = [
    "127.0.0.1",
    "127.255.255.254",
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "100.64.0.1",
    "100.127.255.255",
    "169.254.169.254",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.0.8",
    "192.0.2.1",
    "198.18.0.1",
    "198.51.100.1",
    "203.0.113.1",
    "192.88.99.1",
]
DENIED_V6 = [
    "::1",
    "::",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "febf::1",
    "fec0::1",
    "ff02::1",
    "2001:db8::1",
    "100::1",
    "64:ff9b:1::1",
    "2001:10::1",
    "3fff::1",
]


def encodings(v4: str) -> list[str]:
    """Every IPv6 spelling that ends up at the IPv4 address ``v4``."""
    n = int(IPv4Address(v4))
    return [
        v4,
        str(IPv6Address((0xFFFF << 32) | n)),  # ::ffff:a.b.c.d
        str(IPv6Address(n)),  # ::a.b.c.d (IPv4-compatible)
        str(IPv6Address((0x64FF9B << 96) | n)),  # 64:ff9b::a.b.c.d (NAT64)
        str(IPv6Address((0xFFFF << 48) | n)),  # ::ffff:0:a.b.c.d (SIIT)
        str(IPv6Address((0x2002 << 112) | (n << 80) | 1)),  # 6to4
        str(IPv6Address((0x20010000 << 96) | (n ^ 0xFFFFFFFF))),  # Teredo
    ]


ALL_DENIED = sorted({e for v4 in DENIED_V4 for e in encodings(v4)} | set(DENIED_V6))


@pytest.mark.parametrize("address", ALL_DENIED)
def test_policy_refuses(address: str) -> None:
    assert PeerPolicy().check(address) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808"])
def test_policy_accepts_global(address: str) -> None:
    assert PeerPolicy().check(address) is None


def test_embedded() -> None:
    assert embedded_ipv4(IPv6Address("::ffff:127.0.0.1")) == IPv4Address("127.0.0.1")
    assert embedded_ipv4(IPv6Address("2606:4700::1")) is None


def test_allow_list_and_deny_list() -> None:
    policy = PeerPolicy(allowed=["127.0.0.1"], denied=["8.8.8.0/24", "1.1.1.1-1.1.1.3"])
    assert policy.check("127.0.0.1") is None
    assert policy.check("127.0.0.2") == "loopback"
    assert policy.check("8.8.8.8") == "operator"
    assert policy.check("1.1.1.2") == "operator"
    assert policy.check("1.1.1.4") is None


def test_every_denied_form_gets_403_from_the_server() -> None:
    server, _ = make_server(relay_families=frozenset({4, 6}))
    c = Client(server)
    from visavis.protocol.stun import AdditionalAddressFamily, MessageClass

    msg = c.request(Method.ALLOCATE, [RequestedTransport(17), AdditionalAddressFamily(2)])
    assert msg.cls == MessageClass.SUCCESS
    for address in ALL_DENIED:
        peer = XorPeerAddress(ip_address(address), 9)
        for method, attrs in (
            (Method.CREATE_PERMISSION, [peer]),
            (Method.CHANNEL_BIND, [ChannelNumber(0x4000), peer]),
        ):
            answer = c.request(method, attrs)
            err = answer.get(ErrorCodeAttr)
            assert err is not None, (address, method)
            assert (err.code, err.reason) == (403, "Forbidden IP"), address
    assert not server.allocations[c.ft].permissions
    assert sum(server.stats.denied_peers.values()) == 2 * len(ALL_DENIED)
    # A batch with one bad peer installs none.
    good = XorPeerAddress(ip_address("8.8.8.8"), 9)
    bad = XorPeerAddress(ip_address("::ffff:127.0.0.1"), 9)
    assert error_code(c.request(Method.CREATE_PERMISSION, [good, bad])) == 403
    assert not server.allocations[c.ft].permissions
