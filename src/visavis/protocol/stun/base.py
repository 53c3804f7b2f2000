"""The attribute base class and the unknown-attribute fallback."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from visavis.protocol.stun.errors import MalformedAttribute


class Attribute:
    """One STUN attribute. Subclasses are frozen dataclasses with a ``TYPE``.

    ``encode_value`` returns the value without type, length or padding;
    ``decode_value`` raises :class:`MalformedAttribute` on bad input and nothing else.
    """

    __slots__ = ()
    TYPE: ClassVar[int]

    @property
    def type(self) -> int:
        return self.TYPE

    def encode_value(self, transaction_id: bytes) -> bytes:
        raise NotImplementedError

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class RawAttribute(Attribute):
    """An attribute this codec does not know: kept verbatim (for 420 answers and relays)."""

    TYPE: ClassVar[int] = -1
    attr_type: int
    value: bytes

    @property
    def type(self) -> int:
        return self.attr_type

    def encode_value(self, transaction_id: bytes) -> bytes:
        return self.value


class Uint32Attribute(Attribute):
    """An attribute whose value is one 32-bit unsigned integer, its only field.

    Subclasses are frozen dataclasses naming that field as they like (``seconds``,
    ``priority``...) and giving ``NAME`` for error messages.
    """

    __slots__ = ()
    NAME: ClassVar[str]

    def encode_value(self, transaction_id: bytes) -> bytes:
        return _U32.pack(getattr(self, self.__slots__[0]))  # type: ignore[misc]

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        expect_length(cls.NAME, value, 4)
        return cls(_U32.unpack(value)[0])  # type: ignore[call-arg]


class BytesAttribute(Attribute):
    """An attribute whose value is opaque bytes, its only field: of one of ``LENGTHS``
    (``NAME`` in the error) when the attribute has a fixed size, of any length otherwise.
    Subclasses are frozen dataclasses naming that field as they like (``hmac``, ``token``...)."""

    __slots__ = ()
    NAME: ClassVar[str] = ""
    LENGTHS: ClassVar[tuple[int, ...]] = ()

    def encode_value(self, transaction_id: bytes) -> bytes:
        value: bytes = getattr(self, self.__slots__[0])  # type: ignore[misc]
        return value

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        if cls.LENGTHS:
            expect_length(cls.NAME, value, *cls.LENGTHS)
        return cls(value)  # type: ignore[call-arg]


class Uint16Attribute(Attribute):
    """An attribute whose value is one 16-bit unsigned integer followed by two reserved
    bytes (RFFU), its only field; like :class:`Uint32Attribute` otherwise."""

    __slots__ = ()
    NAME: ClassVar[str]

    def encode_value(self, transaction_id: bytes) -> bytes:
        return _U16_RFFU.pack(getattr(self, self.__slots__[0]), 0)  # type: ignore[misc]

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        expect_length(cls.NAME, value, 4)
        return cls(_U16_RFFU.unpack(value)[0])  # type: ignore[call-arg]


_U32 = struct.Struct("!I")
_U16_RFFU = struct.Struct("!HH")


def expect_length(cls_name: str, value: bytes, *lengths: int) -> None:
    if len(value) not in lengths:
        raise MalformedAttribute(f"{cls_name}: length {len(value)} not in {lengths}")


def decode_text(cls_name: str, value: bytes, max_bytes: int) -> str:
    if len(value) > max_bytes:
        raise MalformedAttribute(f"{cls_name}: {len(value)} bytes exceeds {max_bytes}")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedAttribute(f"{cls_name}: not UTF-8") from exc
