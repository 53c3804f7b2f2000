"""Split a compound RTCP datagram (RFC 3550 s6.1) into typed packets."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from visavis.protocol.rtp.errors import RtcpError
from visavis.protocol.rtp.rtcp.bye import RtcpBye
from visavis.protocol.rtp.rtcp.fir import FMT_FIR, RtcpFir
from visavis.protocol.rtp.rtcp.header import PT_BYE, PT_PSFB, PT_RR, PT_RTPFB, PT_SDES, PT_SR
from visavis.protocol.rtp.rtcp.nack import FMT_NACK, RtcpNack
from visavis.protocol.rtp.rtcp.pli import FMT_PLI, RtcpPli
from visavis.protocol.rtp.rtcp.remb import FMT_AFB, RtcpRemb
from visavis.protocol.rtp.rtcp.report import RtcpRr, RtcpSr
from visavis.protocol.rtp.rtcp.sdes import RtcpSdes
from visavis.protocol.rtp.rtcp.twcc import FMT_TWCC, RtcpTwcc


@dataclass(frozen=True, slots=True)
class RtcpUnknown:
    """A well-framed RTCP packet of a type or format this codec does not interpret."""

    packet_type: int
    fmt: int
    data: bytes


AnyRtcp = (
    RtcpSr
    | RtcpRr
    | RtcpSdes
    | RtcpBye
    | RtcpNack
    | RtcpPli
    | RtcpFir
    | RtcpRemb
    | RtcpTwcc
    | RtcpUnknown
)


def _parse_one(data: bytes) -> AnyRtcp:
    fmt = data[0] & 0x1F
    packet_type = data[1]
    if packet_type == PT_SR:
        return RtcpSr.parse(data)
    if packet_type == PT_RR:
        return RtcpRr.parse(data)
    if packet_type == PT_SDES:
        return RtcpSdes.parse(data)
    if packet_type == PT_BYE:
        return RtcpBye.parse(data)
    if packet_type == PT_RTPFB and fmt == FMT_NACK:
        return RtcpNack.parse(data)
    if packet_type == PT_RTPFB and fmt == FMT_TWCC:
        return RtcpTwcc.parse(data)
    if packet_type == PT_PSFB and fmt == FMT_PLI:
        return RtcpPli.parse(data)
    if packet_type == PT_PSFB and fmt == FMT_FIR:
        return RtcpFir.parse(data)
    if packet_type == PT_PSFB and fmt == FMT_AFB and data[12:16] == b"REMB":
        return RtcpRemb.parse(data)
    return RtcpUnknown(packet_type, fmt, data)


def parse_compound(data: bytes) -> list[AnyRtcp]:
    """Parse every packet of a compound datagram; raise :class:`RtcpError` on bad framing."""
    packets: list[AnyRtcp] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 4:
            raise RtcpError("trailing bytes after the last RTCP packet")
        length = struct.unpack_from("!H", data, pos + 2)[0]
        end = pos + 4 + 4 * length
        if end > len(data):
            raise RtcpError("RTCP length field overruns the datagram")
        packets.append(_parse_one(data[pos:end]))
        pos = end
    if not packets:
        raise RtcpError("empty RTCP datagram")
    return packets
