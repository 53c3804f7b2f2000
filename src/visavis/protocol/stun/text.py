"""UTF-8 attributes: USERNAME, REALM, NONCE, SOFTWARE, ALTERNATE-DOMAIN (RFC 8489 14),
and the NONCE security feature bits (RFC 8489 9.2, 18.1)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from enum import IntFlag
from typing import ClassVar, Self

from visavis.protocol.stun.base import Attribute, decode_text
from visavis.protocol.stun.constants import NONCE_COOKIE, AttrType
from visavis.protocol.stun.errors import StunEncodeError


@dataclass(frozen=True, slots=True)
class _Text(Attribute):
    value: str
    MAX_BYTES: ClassVar[int] = 763

    def encode_value(self, transaction_id: bytes) -> bytes:
        raw = self.value.encode("utf-8")
        if len(raw) > self.MAX_BYTES:
            raise StunEncodeError(f"{type(self).__name__}: {len(raw)} bytes is too long")
        return raw

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(decode_text(cls.__name__, value, cls.MAX_BYTES))


@dataclass(frozen=True, slots=True)
class Username(_Text):
    TYPE: ClassVar[int] = AttrType.USERNAME
    MAX_BYTES: ClassVar[int] = 512


@dataclass(frozen=True, slots=True)
class Realm(_Text):
    TYPE: ClassVar[int] = AttrType.REALM


@dataclass(frozen=True, slots=True)
class Nonce(_Text):
    TYPE: ClassVar[int] = AttrType.NONCE

    @property
    def features(self) -> SecurityFeatures | None:
        """The security feature bits, or None when the nonce has no RFC 8489 cookie."""
        return nonce_features(self.value)


@dataclass(frozen=True, slots=True)
class Software(_Text):
    TYPE: ClassVar[int] = AttrType.SOFTWARE


@dataclass(frozen=True, slots=True)
class AlternateDomain(_Text):
    TYPE: ClassVar[int] = AttrType.ALTERNATE_DOMAIN


class SecurityFeatures(IntFlag):
    """RFC 8489 18.1: bit 0 (the most significant of 24) is the first feature."""

    NONE = 0
    PASSWORD_ALGORITHMS = 1 << 23
    USERNAME_ANONYMITY = 1 << 22


def make_nonce(features: SecurityFeatures, opaque: str) -> str:
    """A nonce announcing ``features``: cookie, 4 base64 characters, then ``opaque``."""
    bits = base64.b64encode(int(features).to_bytes(3, "big")).decode("ascii")
    return NONCE_COOKIE + bits + opaque


def nonce_features(nonce: str) -> SecurityFeatures | None:
    """Decode the feature bits of a nonce; None when it does not start with the cookie."""
    if not nonce.startswith(NONCE_COOKIE) or len(nonce) < len(NONCE_COOKIE) + 4:
        return None
    chunk = nonce[len(NONCE_COOKIE) : len(NONCE_COOKIE) + 4]
    try:
        raw = base64.b64decode(chunk.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    return SecurityFeatures(int.from_bytes(raw, "big") & 0xFFFFFF)
