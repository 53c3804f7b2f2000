"""The 4-byte header every RTCP packet starts with (RFC 3550 s6.4.1)."""

from __future__ import annotations

import struct

from visavis.protocol.rtp.errors import RtcpError

PT_SR = 200
PT_RR = 201
PT_SDES = 202
PT_BYE = 203
PT_RTPFB = 205
PT_PSFB = 206

_HEAD = struct.Struct("!BBH")


def pack_header(count: int, packet_type: int, body: bytes) -> bytes:
    """Header + body; ``body`` must be a multiple of 4 bytes."""
    if len(body) % 4:
        raise RtcpError("RTCP body not 32-bit aligned")
    return _HEAD.pack(0x80 | count, packet_type, len(body) // 4) + body


def unpack_header(data: bytes) -> tuple[int, int, bytes]:
    """(count or FMT, packet type, body without padding) of one RTCP packet."""
    if len(data) < 4:
        raise RtcpError("RTCP packet shorter than its header")
    first, packet_type, length = _HEAD.unpack_from(data)
    if first >> 6 != 2:
        raise RtcpError(f"RTCP version {first >> 6} is not 2")
    end = 4 + 4 * length
    if end > len(data):
        raise RtcpError("RTCP length field overruns the datagram")
    body = data[4:end]
    if first & 0x20:
        if not body or body[-1] == 0 or body[-1] > len(body):
            raise RtcpError("bad RTCP padding")
        body = body[: -body[-1]]
    return first & 0x1F, packet_type, body
