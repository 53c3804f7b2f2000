"""Transport-wide congestion control feedback: RTPFB FMT 15 (header fields only).

The SFU does not run a delay-based estimator on TWCC yet; it reads the base sequence
number and status count so feedback storms can be counted and rate-limited.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from visavis.protocol.rtp.errors import RtcpError
from visavis.protocol.rtp.rtcp.header import PT_RTPFB, unpack_header

FMT_TWCC = 15


@dataclass(frozen=True, slots=True)
class RtcpTwcc:
    """Header of a transport-wide feedback packet."""

    sender_ssrc: int
    media_ssrc: int
    base_sequence: int
    status_count: int
    reference_time: int
    feedback_count: int

    @classmethod
    def parse(cls, data: bytes) -> RtcpTwcc:
        fmt, packet_type, body = unpack_header(data)
        if packet_type != PT_RTPFB or fmt != FMT_TWCC or len(body) < 16:
            raise RtcpError("not a transport-wide CC feedback")
        sender, media, base, count, ref = struct.unpack_from("!IIHHI", body)
        return cls(sender, media, base, count, ref >> 8, ref & 0xFF)
