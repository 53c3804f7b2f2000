"""Status attributes: ERROR-CODE and UNKNOWN-ATTRIBUTES (RFC 8489 14.8-14.9),
ADDRESS-ERROR-CODE (RFC 8656 18.12)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from visavis.protocol.stun.base import Attribute, decode_text
from visavis.protocol.stun.constants import REASONS, AttrType
from visavis.protocol.stun.errors import MalformedAttribute, StunEncodeError


def _encode_code(code: int, reason: str) -> bytes:
    if not 300 <= code <= 699:
        raise StunEncodeError(f"error code {code} out of range")
    raw = reason.encode("utf-8")
    if len(raw) > 763:
        raise StunEncodeError("reason phrase too long")
    return struct.pack("!BB", code // 100, code % 100) + raw


def _decode_code(name: str, value: bytes) -> tuple[int, str]:
    klass, number = value[0] & 0x07, value[1]
    if not 3 <= klass <= 6 or number > 99:
        raise MalformedAttribute(f"{name}: class {klass} number {number}")
    return klass * 100 + number, decode_text(name, value[2:], 763)


@dataclass(frozen=True, slots=True)
class ErrorCodeAttr(Attribute):
    TYPE: ClassVar[int] = AttrType.ERROR_CODE
    code: int
    reason: str = ""

    @classmethod
    def of(cls, code: int, reason: str | None = None) -> ErrorCodeAttr:
        return cls(code, REASONS.get(code, "") if reason is None else reason)

    def encode_value(self, transaction_id: bytes) -> bytes:
        return b"\x00\x00" + _encode_code(self.code, self.reason)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) < 4:
            raise MalformedAttribute("ERROR-CODE: too short")
        code, reason = _decode_code("ERROR-CODE", value[2:])
        return cls(code, reason)


@dataclass(frozen=True, slots=True)
class AddressErrorCode(Attribute):
    TYPE: ClassVar[int] = AttrType.ADDRESS_ERROR_CODE
    family: int
    code: int
    reason: str = ""

    def encode_value(self, transaction_id: bytes) -> bytes:
        return struct.pack("!BB", self.family & 0xFF, 0) + _encode_code(self.code, self.reason)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) < 4:
            raise MalformedAttribute("ADDRESS-ERROR-CODE: too short")
        code, reason = _decode_code("ADDRESS-ERROR-CODE", value[2:])
        return cls(value[0], code, reason)


@dataclass(frozen=True, slots=True)
class UnknownAttributes(Attribute):
    TYPE: ClassVar[int] = AttrType.UNKNOWN_ATTRIBUTES
    types: tuple[int, ...]

    def encode_value(self, transaction_id: bytes) -> bytes:
        return b"".join(struct.pack("!H", t & 0xFFFF) for t in self.types)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) % 2:
            raise MalformedAttribute("UNKNOWN-ATTRIBUTES: odd length")
        return cls(tuple(struct.unpack(f"!{len(value) // 2}H", value)))
