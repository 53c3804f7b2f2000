"""Receiver estimated maximum bitrate (draft-alvestrand-rmcat-remb): PSFB FMT 15 "REMB"."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from visavis.protocol.rtp.errors import RtcpError
from visavis.protocol.rtp.rtcp.header import PT_PSFB, pack_header, unpack_header

FMT_AFB = 15


@dataclass(frozen=True, slots=True)
class RtcpRemb:
    """``bitrate`` bits/s available for ``ssrcs`` as estimated by ``sender_ssrc``."""

    sender_ssrc: int
    bitrate: int
    ssrcs: tuple[int, ...]

    @classmethod
    def parse(cls, data: bytes) -> RtcpRemb:
        fmt, packet_type, body = unpack_header(data)
        if packet_type != PT_PSFB or fmt != FMT_AFB or len(body) < 16 or body[8:12] != b"REMB":
            raise RtcpError("not a REMB")
        sender = struct.unpack_from("!I", body)[0]
        count = body[12]
        exponent = body[13] >> 2
        mantissa = ((body[13] & 3) << 16) | (body[14] << 8) | body[15]
        if len(body) < 16 + 4 * count:
            raise RtcpError("REMB SSRC list truncated")
        ssrcs = struct.unpack_from(f"!{count}I", body, 16)
        return cls(sender, mantissa << exponent, ssrcs)

    def serialize(self) -> bytes:
        exponent = 0
        mantissa = self.bitrate
        while mantissa >= 1 << 18:
            mantissa >>= 1
            exponent += 1
        body = struct.pack("!II4sB", self.sender_ssrc, 0, b"REMB", len(self.ssrcs))
        body += bytes(((exponent << 2) | (mantissa >> 16), (mantissa >> 8) & 0xFF, mantissa & 0xFF))
        body += struct.pack(f"!{len(self.ssrcs)}I", *self.ssrcs)
        return pack_header(FMT_AFB, PT_PSFB, body)
