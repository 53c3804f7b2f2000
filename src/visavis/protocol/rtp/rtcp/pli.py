"""Picture loss indication (RFC 4585 s6.3.1): PSFB, FMT 1, no FCI."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from visavis.protocol.rtp.errors import RtcpError
from visavis.protocol.rtp.rtcp.header import PT_PSFB, pack_header, unpack_header

FMT_PLI = 1


@dataclass(frozen=True, slots=True)
class RtcpPli:
    """A request for a keyframe of ``media_ssrc``."""

    sender_ssrc: int
    media_ssrc: int

    @classmethod
    def parse(cls, data: bytes) -> RtcpPli:
        fmt, packet_type, body = unpack_header(data)
        if packet_type != PT_PSFB or fmt != FMT_PLI or len(body) < 8:
            raise RtcpError("not a PLI")
        sender, media = struct.unpack_from("!II", body)
        return cls(sender, media)

    def serialize(self) -> bytes:
        return pack_header(FMT_PLI, PT_PSFB, struct.pack("!II", self.sender_ssrc, self.media_ssrc))
