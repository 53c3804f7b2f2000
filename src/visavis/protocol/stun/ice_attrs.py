"""ICE (RFC 8445 16.1) and NAT-behaviour discovery (RFC 5780 7) attributes."""

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
class Priority(Uint32Attribute):
    TYPE: ClassVar[int] = AttrType.PRIORITY
    NAME: ClassVar[str] = "PRIORITY"
    priority: int


@dataclass(frozen=True, slots=True)
class UseCandidate(Attribute):
    TYPE: ClassVar[int] = AttrType.USE_CANDIDATE

    def encode_value(self, transaction_id: bytes) -> bytes:
        return b""

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        expect_length("USE-CANDIDATE", value, 0)
        return cls()


@dataclass(frozen=True, slots=True)
class _TieBreaker(Attribute):
    tie_breaker: int

    def encode_value(self, transaction_id: bytes) -> bytes:
        return struct.pack("!Q", self.tie_breaker)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        expect_length(cls.__name__, value, 8)
        return cls(struct.unpack("!Q", value)[0])


@dataclass(frozen=True, slots=True)
class IceControlled(_TieBreaker):
    TYPE: ClassVar[int] = AttrType.ICE_CONTROLLED


@dataclass(frozen=True, slots=True)
class IceControlling(_TieBreaker):
    TYPE: ClassVar[int] = AttrType.ICE_CONTROLLING


@dataclass(frozen=True, slots=True)
class ChangeRequest(Uint32Attribute):
    TYPE: ClassVar[int] = AttrType.CHANGE_REQUEST
    NAME: ClassVar[str] = "CHANGE-REQUEST"
    flags: int


@dataclass(frozen=True, slots=True)
class ResponsePort(Uint16Attribute):
    TYPE: ClassVar[int] = AttrType.RESPONSE_PORT
    NAME: ClassVar[str] = "RESPONSE-PORT"
    port: int


@dataclass(frozen=True, slots=True)
class Padding(BytesAttribute):
    TYPE: ClassVar[int] = AttrType.PADDING
    data: bytes
