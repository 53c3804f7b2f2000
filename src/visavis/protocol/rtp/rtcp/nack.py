"""Generic NACK (RFC 4585 s6.2.1): RTPFB, FMT 1, a list of (PID, BLP) pairs."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from visavis.protocol.rtp.errors import RtcpError
from visavis.protocol.rtp.rtcp.header import PT_RTPFB, pack_header, unpack_header

FMT_NACK = 1


@dataclass(frozen=True, slots=True)
class RtcpNack:
    """Lost sequence numbers of ``media_ssrc`` reported by ``sender_ssrc``."""

    sender_ssrc: int
    media_ssrc: int
    lost: tuple[int, ...]

    @classmethod
    def parse(cls, data: bytes) -> RtcpNack:
        fmt, packet_type, body = unpack_header(data)
        if packet_type != PT_RTPFB or fmt != FMT_NACK or len(body) < 8 or len(body) % 4:
            raise RtcpError("not a generic NACK")
        sender, media = struct.unpack_from("!II", body)
        lost: list[int] = []
        for pos in range(8, len(body), 4):
            pid, blp = struct.unpack_from("!HH", body, pos)
            lost.append(pid)
            for bit in range(16):
                if blp & (1 << bit):
                    lost.append((pid + bit + 1) & 0xFFFF)
        return cls(sender, media, tuple(lost))

    def serialize(self) -> bytes:
        body = bytearray(struct.pack("!II", self.sender_ssrc, self.media_ssrc))
        items: list[tuple[int, int]] = []
        for seq in self.lost:
            if items and 0 < (seq - items[-1][0]) & 0xFFFF <= 16:
                pid, blp = items[-1]
                items[-1] = (pid, blp | 1 << (((seq - pid) & 0xFFFF) - 1))
            else:
                items.append((seq, 0))
        for pid, blp in items:
            body += struct.pack("!HH", pid, blp)
        return pack_header(FMT_NACK, PT_RTPFB, bytes(body))
