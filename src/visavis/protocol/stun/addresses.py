"""Address attributes: MAPPED-ADDRESS, XOR-MAPPED-ADDRESS (RFC 8489 14.1-14.2),
XOR-PEER-ADDRESS and XOR-RELAYED-ADDRESS (RFC 8656 18.3, 18.5), ALTERNATE-SERVER
(RFC 8489 14.15), RESPONSE-ORIGIN and OTHER-ADDRESS (RFC 5780)."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import ClassVar, Self

from visavis.protocol.stun.base import Attribute
from visavis.protocol.stun.constants import MAGIC_COOKIE, MAGIC_COOKIE_BYTES, AttrType
from visavis.protocol.stun.errors import MalformedAttribute

IPAddress = IPv4Address | IPv6Address


def _decode_plain(name: str, value: bytes) -> tuple[IPAddress, int]:
    if len(value) == 8 and value[1] == 0x01:
        return IPv4Address(value[4:8]), struct.unpack_from("!H", value, 2)[0]
    if len(value) == 20 and value[1] == 0x02:
        return IPv6Address(value[4:20]), struct.unpack_from("!H", value, 2)[0]
    raise MalformedAttribute(f"{name}: family {value[1:2].hex() or '-'} with length {len(value)}")


def _encode_plain(ip: IPAddress, port: int) -> bytes:
    family = 0x01 if ip.version == 4 else 0x02
    return struct.pack("!BBH", 0, family, port) + ip.packed


def _xor_bytes(data: bytes, mask: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, mask, strict=True))


@dataclass(frozen=True, slots=True)
class _PlainAddress(Attribute):
    ip: IPAddress
    port: int

    @classmethod
    def of(cls, host: str, port: int) -> Self:
        return cls(ipaddress.ip_address(host), port)

    def encode_value(self, transaction_id: bytes) -> bytes:
        return _encode_plain(self.ip, self.port)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        ip, port = _decode_plain(cls.__name__, value)
        return cls(ip, port)

    @property
    def address(self) -> tuple[str, int]:
        return str(self.ip), self.port


@dataclass(frozen=True, slots=True)
class _XorAddress(_PlainAddress):
    def encode_value(self, transaction_id: bytes) -> bytes:
        port = self.port ^ (MAGIC_COOKIE >> 16)
        family = 0x01 if self.ip.version == 4 else 0x02
        mask = MAGIC_COOKIE_BYTES if self.ip.version == 4 else MAGIC_COOKIE_BYTES + transaction_id
        return struct.pack("!BBH", 0, family, port) + _xor_bytes(self.ip.packed, mask)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        ip, port = _decode_plain(cls.__name__, value)
        port ^= MAGIC_COOKIE >> 16
        mask = MAGIC_COOKIE_BYTES if ip.version == 4 else MAGIC_COOKIE_BYTES + transaction_id
        raw = _xor_bytes(ip.packed, mask)
        return cls(IPv4Address(raw) if ip.version == 4 else IPv6Address(raw), port)


@dataclass(frozen=True, slots=True)
class MappedAddress(_PlainAddress):
    TYPE: ClassVar[int] = AttrType.MAPPED_ADDRESS


@dataclass(frozen=True, slots=True)
class AlternateServer(_PlainAddress):
    TYPE: ClassVar[int] = AttrType.ALTERNATE_SERVER


@dataclass(frozen=True, slots=True)
class ResponseOrigin(_PlainAddress):
    TYPE: ClassVar[int] = AttrType.RESPONSE_ORIGIN


@dataclass(frozen=True, slots=True)
class OtherAddress(_PlainAddress):
    TYPE: ClassVar[int] = AttrType.OTHER_ADDRESS


@dataclass(frozen=True, slots=True)
class XorMappedAddress(_XorAddress):
    TYPE: ClassVar[int] = AttrType.XOR_MAPPED_ADDRESS


@dataclass(frozen=True, slots=True)
class XorPeerAddress(_XorAddress):
    TYPE: ClassVar[int] = AttrType.XOR_PEER_ADDRESS


@dataclass(frozen=True, slots=True)
class XorRelayedAddress(_XorAddress):
    TYPE: ClassVar[int] = AttrType.XOR_RELAYED_ADDRESS
