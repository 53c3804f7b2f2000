"""Which peers a relay may talk to (secure by default).

Theory of operation: a peer address is first reduced to the IPv4 address it embeds, if
any (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible ``::a.b.c.d``, NAT64 ``64:ff9b::/96``
and ``64:ff9b:1::/48``, 6to4 ``2002::/16``, Teredo ``2001::/32``), because the kernel or a
translator on the path will deliver to that IPv4 address. Both the address and its
embedded IPv4 address must then pass: an operator allow list (``allowed-peer-ip``) lets a
range through, otherwise the operator deny list (``denied-peer-ip``) and the IANA
special-purpose registries (RFC 6890 and successors) refuse it. coturn's bypasses
(CVE-2020-26262 through ``0.0.0.0`` and ``::``, CVE-2026-27624 through
``::ffff:127.0.0.1``) are exactly the embedded forms this reduction catches.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

# (network, reason) — reasons are metric labels, keep the set small.
DEFAULT_DENIED: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), reason)
    for net, reason in (
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "cgnat"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "special-purpose"),
        ("192.0.2.0/24", "documentation"),
        ("192.31.196.0/24", "special-purpose"),
        ("192.52.193.0/24", "special-purpose"),
        ("192.88.99.0/24", "special-purpose"),
        ("192.168.0.0/16", "private"),
        ("192.175.48.0/24", "special-purpose"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("255.255.255.255/32", "broadcast"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "ipv4-compatible"),
        ("::ffff:0:0/96", "ipv4-mapped"),
        ("::ffff:0:0:0/96", "ipv4-translated"),
        ("64:ff9b:1::/48", "nat64"),
        ("100::/64", "discard"),
        ("2001::/23", "special-purpose"),
        ("2001:db8::/32", "documentation"),
        ("2002::/16", "6to4"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "special-purpose"),
        ("fc00::/7", "unique-local"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    )
)

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_COMPAT = ipaddress.ip_network("::/96")
_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")


def embedded_ipv4(ip: IPAddress) -> IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, in every encoding we know of."""
    if ip.version == 4:
        return None
    assert isinstance(ip, IPv6Address)
    value = int(ip)
    if ip in _MAPPED or ip in _COMPAT or ip in _NAT64 or ip in _TRANSLATED:
        return IPv4Address(value & 0xFFFFFFFF)
    if ip in _NAT64_LOCAL:
        # RFC 8215 leaves the embedding length to the operator; check the common /96 one.
        return IPv4Address(value & 0xFFFFFFFF)
    if ip in _SIX_TO_FOUR:
        return IPv4Address((value >> 80) & 0xFFFFFFFF)
    if ip in _TEREDO:
        return IPv4Address((value & 0xFFFFFFFF) ^ 0xFFFFFFFF)
    return None


class PeerPolicy:
    """Decides whether a relay may send to (and accept from) a peer address.

    :param allowed: networks relaying is allowed to even when denied otherwise
        (``allowed-peer-ip``; tests on loopback pass ``127.0.0.1``).
    :param denied: extra networks to refuse (``denied-peer-ip``).
    """

    def __init__(
        self, allowed: Iterable[str | IPNetwork] = (), denied: Iterable[str | IPNetwork] = ()
    ) -> None:
        self.allowed: list[IPNetwork] = [net for n in allowed for net in parse_networks(n)]
        self.denied: list[tuple[IPNetwork, str]] = [
            *DEFAULT_DENIED,
            *((net, "operator") for n in denied for net in parse_networks(n)),
        ]
        self._cache: dict[str, str | None] = {}

    def _is_allowed(self, ip: IPAddress) -> bool:
        return any(ip.version == n.version and ip in n for n in self.allowed)

    def _denial(self, ip: IPAddress) -> str | None:
        for net, reason in self.denied:
            if ip.version == net.version and ip in net:
                return reason
        if not ip.is_global and ip.version == 4:
            return "special-purpose"
        return None

    def check(self, ip: IPAddress | str) -> str | None:
        """None when the peer is acceptable, else the reason it is refused."""
        key = str(ip)
        if key in self._cache:
            return self._cache[key]
        result = self._check(ipaddress.ip_address(ip) if isinstance(ip, str) else ip)
        if len(self._cache) < 65536:
            self._cache[key] = result
        return result

    def _check(self, ip: IPAddress) -> str | None:
        v4 = embedded_ipv4(ip)
        if v4 is not None:
            # The embedded destination decides; the IPv6 wrapper alone is never a pass.
            if self._is_allowed(v4) or self._is_allowed(ip):
                return None
            inner = self._denial(v4)
            if inner is not None:
                return inner
            return self._denial(ip)
        if self._is_allowed(ip):
            return None
        return self._denial(ip)


def parse_networks(value: str | IPNetwork) -> list[IPNetwork]:
    """A CIDR, a single address, or coturn's ``first-last`` range, as networks."""
    if isinstance(value, IPv4Network | IPv6Network):
        return [value]
    text = value.strip()
    if "-" in text:
        first_text, last_text = (part.strip() for part in text.split("-", 1))
        first, last = ipaddress.ip_address(first_text), ipaddress.ip_address(last_text)
        if first.version != last.version:
            raise ValueError(f"range {text} mixes address families")
        return list(ipaddress.summarize_address_range(first, last))
    return [ipaddress.ip_network(text, strict=False)]
