"""Full intra request (RFC 5104 s4.3.1): PSFB, FMT 4, (SSRC, sequence) entries."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from visavis.protocol.rtp.errors import RtcpError
from visavis.protocol.rtp.rtcp.header import PT_PSFB, pack_header, unpack_header

FMT_FIR = 4


@dataclass(frozen=True, slots=True)
class RtcpFir:
    """Keyframe requests: ``entries`` of (media SSRC, command sequence number)."""

    sender_ssrc: int
    entries: tuple[tuple[int, int], ...]

    @classmethod
    def parse(cls, data: bytes) -> RtcpFir:
        fmt, packet_type, body = unpack_header(data)
        if packet_type != PT_PSFB or fmt != FMT_FIR or len(body) < 8 or len(body) % 8:
            raise RtcpError("not a FIR")
        sender = struct.unpack_from("!I", body)[0]
        entries = tuple(
            (struct.unpack_from("!I", body, pos)[0], body[pos + 4])
            for pos in range(8, len(body), 8)
        )
        return cls(sender, entries)

    def serialize(self) -> bytes:
        body = struct.pack("!II", self.sender_ssrc, 0) + b"".join(
            struct.pack("!IB3x", ssrc, seq & 0xFF) for ssrc, seq in self.entries
        )
        return pack_header(FMT_FIR, PT_PSFB, body)
