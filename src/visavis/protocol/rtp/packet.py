"""RTP fixed header and packet (RFC 3550 section 5.1).

:class:`RtpPacket` is the readable, validating form used by tests and the control path.
The forwarding loop uses the ``*_of`` helpers and :func:`build_header`, which read or
write single fields with ``struct`` and never allocate a dataclass.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from visavis.protocol.rtp.errors import RtpError
from visavis.protocol.rtp.extensions import (
    parse_extensions,
    serialize_extensions,
)

RTP_VERSION = 2
_HEADER = struct.Struct("!BBHII")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


def is_rtcp(data: bytes) -> bool:
    """True if a datagram in the RTP range (first byte 128-191) is RTCP (RFC 5761 s4).

    RTCP packet types 192-223 collide with RTP payload types 64-95 once the marker bit is
    set; those payload types are never used dynamically by WebRTC, so the test is exact.
    """
    return len(data) >= 2 and 192 <= data[1] <= 223


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet; ``extensions`` maps extension id to its raw value."""

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extensions: dict[int, bytes] = field(default_factory=dict)
    extension_profile: int = 0xBEDE
    payload: bytes = b""
    padding_size: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= 127:
            raise RtpError(f"payload type {self.payload_type} out of range")
        if not 0 <= self.sequence_number <= 0xFFFF:
            raise RtpError(f"sequence number {self.sequence_number} out of range")
        if not 0 <= self.timestamp <= 0xFFFFFFFF or not 0 <= self.ssrc <= 0xFFFFFFFF:
            raise RtpError("timestamp or SSRC out of range")
        if len(self.csrcs) > 15:
            raise RtpError("more than 15 CSRCs")

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one (decrypted) RTP packet; raise :class:`RtpError` if malformed."""
        if len(data) < 12:
            raise RtpError(f"RTP packet too short ({len(data)} bytes)")
        first, second, seq, ts, ssrc = _HEADER.unpack_from(data, 0)
        if first >> 6 != RTP_VERSION:
            raise RtpError(f"RTP version {first >> 6} is not 2")
        cc = first & 0x0F
        pos = 12 + 4 * cc
        if len(data) < pos:
            raise RtpError("RTP packet truncated in CSRC list")
        csrcs = struct.unpack_from(f"!{cc}I", data, 12) if cc else ()
        extensions: dict[int, bytes] = {}
        profile = 0xBEDE
        if first & 0x10:
            if len(data) < pos + 4:
                raise RtpError("RTP packet truncated in extension header")
            profile, length = struct.unpack_from("!HH", data, pos)
            end = pos + 4 + 4 * length
            if len(data) < end:
                raise RtpError("RTP header extension longer than packet")
            extensions = parse_extensions(profile, data[pos + 4 : end])
            pos = end
        padding = 0
        stop = len(data)
        if first & 0x20:
            padding = data[-1]
            if padding == 0 or stop - padding < pos:
                raise RtpError("bad RTP padding length")
            stop -= padding
        return cls(
            payload_type=second & 0x7F,
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            marker=bool(second & 0x80),
            csrcs=tuple(csrcs),
            extensions=extensions,
            extension_profile=profile,
            payload=data[pos:stop],
            padding_size=padding,
        )

    def serialize(self) -> bytes:
        """Return the packet's bytes (extensions in the smallest fitting form)."""
        ext = serialize_extensions(self.extensions) if self.extensions else b""
        return (
            build_header(
                self.payload_type,
                self.sequence_number,
                self.timestamp,
                self.ssrc,
                marker=self.marker,
                csrcs=self.csrcs,
                extension_block=ext,
                padding=self.padding_size > 0,
            )
            + self.payload
            + (
                bytes(self.padding_size - 1) + bytes([self.padding_size])
                if self.padding_size
                else b""
            )
        )


def _padding(size: int) -> bytes:
    return bytes(size - 1) + bytes([size]) if size else b""


def build_header(
    payload_type: int,
    sequence_number: int,
    timestamp: int,
    ssrc: int,
    *,
    marker: bool = False,
    csrcs: tuple[int, ...] = (),
    extension_block: bytes = b"",
    padding: bool = False,
) -> bytes:
    """Serialize an RTP fixed header, CSRCs and an already-encoded extension block.

    ``extension_block`` is the output of :func:`serialize_extensions` (profile, length
    and data) or empty.
    """
    first = 0x80 | len(csrcs) | (0x10 if extension_block else 0) | (0x20 if padding else 0)
    head = _HEADER.pack(
        first, (0x80 if marker else 0) | payload_type, sequence_number, timestamp, ssrc
    )
    if csrcs:
        head += struct.pack(f"!{len(csrcs)}I", *csrcs)
    return head + extension_block


def payload_offset(data: bytes) -> int:
    """Offset of the payload in a valid RTP packet (after CSRCs and extensions)."""
    pos = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        pos += 4 + 4 * _U16.unpack_from(data, pos + 2)[0]
    if pos > len(data):
        raise RtpError("RTP header longer than packet")
    return pos


def ssrc_of(data: bytes) -> int:
    """SSRC of an RTP packet (no validation: call on packets at least 12 bytes long)."""
    value: int = _U32.unpack_from(data, 8)[0]
    return value


def sequence_of(data: bytes) -> int:
    """Sequence number of an RTP packet."""
    value: int = _U16.unpack_from(data, 2)[0]
    return value
