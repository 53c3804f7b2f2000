"""SFrame header codec (RFC 9605 s4.3): one config byte, then KID and CTR bytes.

Config byte: ``X|K(3)|Y|C(3)``. X=0: K is the KID itself (0..7); X=1: the KID follows
in K+1 bytes. Y and C work the same way for the counter. Values are big-endian, encoded
in the fewest bytes (the decoder accepts longer encodings: the header is authenticated
as it appears on the wire).
"""

from __future__ import annotations

from dataclasses import dataclass

from visavis.protocol.sframe.errors import HeaderError, TruncatedError

MAX_VALUE = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Header:
    """A parsed header; ``raw`` is its exact wire bytes (part of the AAD)."""

    kid: int
    ctr: int
    raw: bytes


def _field(value: int) -> tuple[int, bytes]:
    """(3-bit config, extra bytes) for one KID or CTR value."""
    if not 0 <= value <= MAX_VALUE:
        raise HeaderError(f"value {value} does not fit in 64 bits")
    if value < 8:
        return value, b""
    size = (value.bit_length() + 7) // 8
    return 0x8 | (size - 1), value.to_bytes(size, "big")


def encode_header(kid: int, ctr: int) -> bytes:
    """The minimal header for ``kid`` and ``ctr``."""
    k, kid_bytes = _field(kid)
    c, ctr_bytes = _field(ctr)
    return bytes(((k << 4) | c,)) + kid_bytes + ctr_bytes


def decode_header(data: bytes | memoryview) -> Header:
    """Parse the header at the start of ``data`` (the rest is left to the caller)."""
    if not data:
        raise TruncatedError("empty SFrame ciphertext")
    config = data[0]
    pos = 1
    values: list[int] = []
    for nibble in (config >> 4, config & 0x0F):
        if nibble & 0x8:
            size = (nibble & 0x7) + 1
            if len(data) < pos + size:
                raise TruncatedError("header ends inside its KID or CTR")
            values.append(int.from_bytes(data[pos : pos + size], "big"))
            pos += size
        else:
            values.append(nibble)
    return Header(values[0], values[1], bytes(data[:pos]))
