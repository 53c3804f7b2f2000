"""Authentication attributes: MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256, FINGERPRINT,
PASSWORD-ALGORITHM, PASSWORD-ALGORITHMS, USERHASH (RFC 8489 14.4-14.7, 14.11-14.12)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from visavis.protocol.stun.base import Attribute, BytesAttribute, Uint32Attribute
from visavis.protocol.stun.constants import AttrType
from visavis.protocol.stun.errors import MalformedAttribute, StunEncodeError


@dataclass(frozen=True, slots=True)
class MessageIntegrity(BytesAttribute):
    TYPE: ClassVar[int] = AttrType.MESSAGE_INTEGRITY
    NAME: ClassVar[str] = "MESSAGE-INTEGRITY"
    LENGTHS: ClassVar[tuple[int, ...]] = (20,)
    hmac: bytes


@dataclass(frozen=True, slots=True)
class MessageIntegritySha256(BytesAttribute):
    TYPE: ClassVar[int] = AttrType.MESSAGE_INTEGRITY_SHA256
    hmac: bytes

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        # RFC 8489 14.6: truncation to at least 16 bytes, in multiples of 4.
        if not 16 <= len(value) <= 32 or len(value) % 4:
            raise MalformedAttribute(f"MESSAGE-INTEGRITY-SHA256: length {len(value)}")
        return cls(value)


@dataclass(frozen=True, slots=True)
class Fingerprint(Uint32Attribute):
    TYPE: ClassVar[int] = AttrType.FINGERPRINT
    NAME: ClassVar[str] = "FINGERPRINT"
    crc: int


@dataclass(frozen=True, slots=True)
class PasswordAlgorithmValue:
    """One (algorithm, parameters) pair."""

    algorithm: int
    parameters: bytes = b""

    def encode(self) -> bytes:
        if len(self.parameters) > 0xFFFF:
            raise StunEncodeError("PASSWORD-ALGORITHM parameters too long")
        pad = b"\x00" * (-len(self.parameters) % 4)
        return struct.pack("!HH", self.algorithm, len(self.parameters)) + self.parameters + pad


def _decode_algorithms(name: str, value: bytes) -> list[PasswordAlgorithmValue]:
    out: list[PasswordAlgorithmValue] = []
    pos = 0
    while pos < len(value):
        if pos + 4 > len(value):
            raise MalformedAttribute(f"{name}: truncated")
        alg, plen = struct.unpack_from("!HH", value, pos)
        end = pos + 4 + plen
        if end > len(value):
            raise MalformedAttribute(f"{name}: parameters overrun")
        out.append(PasswordAlgorithmValue(alg, value[pos + 4 : end]))
        pos = end + (-plen % 4)
    if pos != len(value):
        raise MalformedAttribute(f"{name}: padding overruns")
    return out


@dataclass(frozen=True, slots=True)
class PasswordAlgorithm(Attribute):
    TYPE: ClassVar[int] = AttrType.PASSWORD_ALGORITHM
    algorithm: int
    parameters: bytes = b""

    def encode_value(self, transaction_id: bytes) -> bytes:
        return PasswordAlgorithmValue(self.algorithm, self.parameters).encode()

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        algs = _decode_algorithms("PASSWORD-ALGORITHM", value)
        if len(algs) != 1:
            raise MalformedAttribute("PASSWORD-ALGORITHM: exactly one algorithm expected")
        return cls(algs[0].algorithm, algs[0].parameters)


@dataclass(frozen=True, slots=True)
class PasswordAlgorithms(Attribute):
    TYPE: ClassVar[int] = AttrType.PASSWORD_ALGORITHMS
    algorithms: tuple[PasswordAlgorithmValue, ...]

    def encode_value(self, transaction_id: bytes) -> bytes:
        return b"".join(a.encode() for a in self.algorithms)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(tuple(_decode_algorithms("PASSWORD-ALGORITHMS", value)))


@dataclass(frozen=True, slots=True)
class Userhash(BytesAttribute):
    TYPE: ClassVar[int] = AttrType.USERHASH
    NAME: ClassVar[str] = "USERHASH"
    LENGTHS: ClassVar[tuple[int, ...]] = (32,)
    digest: bytes
