"""TURN attributes (RFC 8656 18, RFC 6062 6.2): CHANNEL-NUMBER, LIFETIME, DATA,
REQUESTED-ADDRESS-FAMILY, ADDITIONAL-ADDRESS-FAMILY, EVEN-PORT, REQUESTED-TRANSPORT,
DONT-FRAGMENT, RESERVATION-TOKEN, ICMP, CONNECTION-ID. (The XOR address attributes live in
:mod:`visavis.protocol.stun.addresses`, ADDRESS-ERROR-CODE in ``status``.)"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from visavis.protocol.stun.base import (
    Attribute,
    BytesAttribute,
    Uint16Attribute,
    Uint32Attribute,
    expect_length,
)
from visavis.protocol.stun.constants import AttrType


@dataclass(frozen=True, slots=True)
class ChannelNumber(Uint16Attribute):
    TYPE: ClassVar[int] = AttrType.CHANNEL_NUMBER
    NAME: ClassVar[str] = "CHANNEL-NUMBER"
    number: int


@dataclass(frozen=True, slots=True)
class Lifetime(Uint32Attribute):
    TYPE: ClassVar[int] = AttrType.LIFETIME
    NAME: ClassVar[str] = "LIFETIME"
    seconds: int


@dataclass(frozen=True, slots=True)
class Data(BytesAttribute):
    TYPE: ClassVar[int] = AttrType.DATA
    data: bytes


@dataclass(frozen=True, slots=True)
class _FamilyAttr(Attribute):
    family: int

    def encode_value(self, transaction_id: bytes) -> bytes:
        return struct.pack("!B3x", self.family)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        expect_length(cls.__name__, value, 4)
        return cls(value[0])


@dataclass(frozen=True, slots=True)
class RequestedAddressFamily(_FamilyAttr):
    TYPE: ClassVar[int] = AttrType.REQUESTED_ADDRESS_FAMILY


@dataclass(frozen=True, slots=True)
class AdditionalAddressFamily(_FamilyAttr):
    TYPE: ClassVar[int] = AttrType.ADDITIONAL_ADDRESS_FAMILY


@dataclass(frozen=True, slots=True)
class EvenPort(Attribute):
    TYPE: ClassVar[int] = AttrType.EVEN_PORT
    reserve: bool = False

    def encode_value(self, transaction_id: bytes) -> bytes:
        return bytes([0x80 if self.reserve else 0])

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        expect_length("EVEN-PORT", value, 1)
        return cls(bool(value[0] & 0x80))


@dataclass(frozen=True, slots=True)
class RequestedTransport(Attribute):
    TYPE: ClassVar[int] = AttrType.REQUESTED_TRANSPORT
    protocol: int

    def encode_value(self, transaction_id: bytes) -> bytes:
        return struct.pack("!B3x", self.protocol)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        expect_length("REQUESTED-TRANSPORT", value, 4)
        return cls(value[0])


@dataclass(frozen=True, slots=True)
class DontFragment(Attribute):
    TYPE: ClassVar[int] = AttrType.DONT_FRAGMENT

    def encode_value(self, transaction_id: bytes) -> bytes:
        return b""

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        expect_length("DONT-FRAGMENT", value, 0)
        return cls()


@dataclass(frozen=True, slots=True)
class ReservationToken(BytesAttribute):
    TYPE: ClassVar[int] = AttrType.RESERVATION_TOKEN
    NAME: ClassVar[str] = "RESERVATION-TOKEN"
    LENGTHS: ClassVar[tuple[int, ...]] = (8,)
    token: bytes


@dataclass(frozen=True, slots=True)
class Icmp(Attribute):
    TYPE: ClassVar[int] = AttrType.ICMP
    icmp_type: int
    icmp_code: int
    error_data: int = 0

    def encode_value(self, transaction_id: bytes) -> bytes:
        return struct.pack("!2xBBI", self.icmp_type, self.icmp_code, self.error_data)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        expect_length("ICMP", value, 8)
        t, c, d = struct.unpack("!2xBBI", value)
        return cls(t, c, d)


@dataclass(frozen=True, slots=True)
class ConnectionId(Uint32Attribute):
    TYPE: ClassVar[int] = AttrType.CONNECTION_ID
    NAME: ClassVar[str] = "CONNECTION-ID"
    connection_id: int
