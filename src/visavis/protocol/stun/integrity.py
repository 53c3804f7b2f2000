"""Keys and digests: long-term and short-term credentials (RFC 8489 9.1-9.2), USERHASH,
SASLprep (RFC 4013) for passwords, FINGERPRINT's CRC-32 (RFC 8489 14.7)."""

from __future__ import annotations

import hashlib
import stringprep
import unicodedata
import zlib

from visavis.protocol.stun.constants import FINGERPRINT_XOR, PasswordAlgorithmId


class SaslprepError(ValueError):
    """The string contains characters SASLprep prohibits."""


def saslprep(value: str) -> str:
    """RFC 4013 SASLprep with stored-string rules (the RFC 5769 vectors use it)."""
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch for ch in value if not stringprep.in_table_b1(ch)
    )
    normalized = unicodedata.normalize("NFKC", mapped)
    if not normalized:
        return normalized
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21,
        stringprep.in_table_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,
    )
    for ch in normalized:
        if any(check(ch) for check in prohibited):
            raise SaslprepError(f"prohibited character U+{ord(ch):04X}")
    if any(stringprep.in_table_d1(ch) for ch in normalized):
        if any(stringprep.in_table_d2(ch) for ch in normalized):
            raise SaslprepError("mixed bidirectional text")
        if not (stringprep.in_table_d1(normalized[0]) and stringprep.in_table_d1(normalized[-1])):
            raise SaslprepError("RandALCat text must start and end with RandALCat")
    return normalized


def _prep(password: str) -> str:
    try:
        return saslprep(password)
    except SaslprepError:
        return password


def long_term_key(
    username: str, realm: str, password: str, algorithm: int = PasswordAlgorithmId.MD5
) -> bytes:
    """The long-term credential key: H(username ":" realm ":" password)."""
    material = f"{username}:{realm}:{_prep(password)}".encode()
    if algorithm == PasswordAlgorithmId.SHA256:
        return hashlib.sha256(material).digest()
    return hashlib.md5(material).digest()


def short_term_key(password: str) -> bytes:
    """The short-term credential key (ICE): the prepared password itself."""
    return _prep(password).encode("utf-8")


def userhash(username: str, realm: str) -> bytes:
    """RFC 8489 14.4: SHA-256(username ":" realm)."""
    return hashlib.sha256(f"{username}:{realm}".encode()).digest()


def fingerprint_crc(data: bytes) -> int:
    return (zlib.crc32(data) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
