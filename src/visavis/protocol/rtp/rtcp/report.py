"""Sender and receiver reports with their report blocks (RFC 3550 s6.4)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from visavis.protocol.rtp.errors import RtcpError
from visavis.protocol.rtp.rtcp.header import PT_RR, PT_SR, pack_header, unpack_header

_BLOCK = struct.Struct("!IIIIII")
_SENDER = struct.Struct("!QIII")


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """Reception statistics for one source."""

    ssrc: int
    fraction_lost: int
    packets_lost: int
    highest_sequence: int
    jitter: int
    lsr: int
    dlsr: int

    @classmethod
    def parse(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, lost, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset)
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 0x1000000
        return cls(ssrc, lost >> 24, cumulative, highest, jitter, lsr, dlsr)

    def serialize(self) -> bytes:
        lost = (self.fraction_lost & 0xFF) << 24 | (self.packets_lost & 0xFFFFFF)
        return _BLOCK.pack(self.ssrc, lost, self.highest_sequence, self.jitter, self.lsr, self.dlsr)


def _blocks(body: bytes, offset: int, count: int) -> tuple[ReportBlock, ...]:
    if len(body) < offset + 24 * count:
        raise RtcpError("report blocks overrun the packet")
    return tuple(ReportBlock.parse(body, offset + 24 * i) for i in range(count))


@dataclass(frozen=True, slots=True)
class RtcpSr:
    """Sender report: NTP/RTP timestamp pair and sender counters."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()

    @classmethod
    def parse(cls, data: bytes) -> RtcpSr:
        count, packet_type, body = unpack_header(data)
        if packet_type != PT_SR or len(body) < 24:
            raise RtcpError("not a sender report")
        ssrc = struct.unpack_from("!I", body)[0]
        ntp, rtp, packets, octets = _SENDER.unpack_from(body, 4)
        return cls(ssrc, ntp, rtp, packets, octets, _blocks(body, 24, count))

    def serialize(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + _SENDER.pack(
            self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count
        )
        body += b"".join(r.serialize() for r in self.reports)
        return pack_header(len(self.reports), PT_SR, body)


@dataclass(frozen=True, slots=True)
class RtcpRr:
    """Receiver report."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    @classmethod
    def parse(cls, data: bytes) -> RtcpRr:
        count, packet_type, body = unpack_header(data)
        if packet_type != PT_RR or len(body) < 4:
            raise RtcpError("not a receiver report")
        return cls(struct.unpack_from("!I", body)[0], _blocks(body, 4, count))

    def serialize(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + b"".join(r.serialize() for r in self.reports)
        return pack_header(len(self.reports), PT_RR, body)
