"""DTLS records as the SFU sees them outside OpenSSL (RFC 6347 s4.1, RFC 7983), sans-I/O.

OpenSSL reads and writes the records; around it the SFU needs to know a datagram is
DTLS at all (the first byte, :mod:`visavis.protocol.rfc7983`), to find the record
boundaries in what OpenSSL wrote to its memory BIO (the BIO is a byte stream, not a
queue of datagrams), and to pack whole records into datagrams that fit the path
(:func:`pack_datagrams`): a datagram that cuts a record in two loses both halves.

Only the DTLS 1.0/1.2 header (13 bytes: type, version, epoch, sequence number, length) is
parsed; DTLS 1.3's unified header (first byte 32-63) is DTLS for the demux but not
parsed (OpenSSL 3.0 speaks DTLS up to 1.2).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from dataclasses import dataclass

HEADER_LENGTH = 13
_HEADER = struct.Struct("!BHHHIH")  # type, version, epoch, sequence number (48 bits), length
VERSIONS = frozenset({0xFEFF, 0xFEFD})  # DTLS 1.0 (also any first ClientHello), DTLS 1.2


class ContentType(enum.IntEnum):
    CHANGE_CIPHER_SPEC = 20
    ALERT = 21
    HANDSHAKE = 22
    APPLICATION_DATA = 23
    HEARTBEAT = 24
    TLS12_CID = 25
    ACK = 26


_CONTENT_TYPES = frozenset(ContentType)


class DtlsRecordError(ValueError):
    """Bytes that are not a whole number of DTLS 1.0/1.2 records."""


@dataclass(frozen=True, slots=True)
class RecordHeader:
    content_type: int
    version: int
    epoch: int
    sequence_number: int
    length: int  # of the fragment that follows the header


def parse_header(data: bytes, offset: int = 0) -> RecordHeader:
    """The record header at ``offset``; :class:`DtlsRecordError` if there is none."""
    if len(data) - offset < HEADER_LENGTH:
        raise DtlsRecordError(f"{len(data) - offset} bytes: shorter than a record header")
    kind, version, epoch, seq_high, seq_low, length = _HEADER.unpack_from(data, offset)
    if kind not in _CONTENT_TYPES:
        raise DtlsRecordError(f"content type {kind} is not a DTLS 1.0/1.2 record")
    if version not in VERSIONS:
        raise DtlsRecordError(f"record version 0x{version:04x}")
    return RecordHeader(kind, version, epoch, seq_high << 32 | seq_low, length)


def split_records(data: bytes) -> list[bytes]:
    """Cut ``data`` into whole records (header and fragment each); raise
    :class:`DtlsRecordError` if it ends inside one or holds something else."""
    records: list[bytes] = []
    offset = 0
    while offset < len(data):
        end = offset + HEADER_LENGTH + parse_header(data, offset).length
        if end > len(data):
            raise DtlsRecordError(f"record of {end - offset} bytes cut at {len(data) - offset}")
        records.append(data[offset:end])
        offset = end
    return records


def pack_datagrams(records: Iterable[bytes], limit: int) -> list[bytes]:
    """Consecutive records joined into datagrams of at most ``limit`` bytes, in order; a
    record longer than ``limit`` goes alone (it cannot be cut)."""
    datagrams: list[bytes] = []
    current = b""
    for record in records:
        if current and len(current) + len(record) > limit:
            datagrams.append(current)
            current = b""
        current += record
    if current:
        datagrams.append(current)
    return datagrams
