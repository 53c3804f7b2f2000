"""RFC 7983 demultiplexing, sans-I/O: which protocol a packet on a shared port carries.

One UDP port (or one ICE-TCP connection) carries STUN, DTLS and SRTP/SRTCP; the first
byte tells them apart: 0-3 STUN, 20-63 DTLS, 128-191 RTP/RTCP (SRTP and SRTCP here).
The other ranges (ZRTP 16-19, TURN ChannelData 64-79) have no use on the SFU's port.
"""

from __future__ import annotations

import enum


class PacketKind(enum.Enum):
    STUN = "stun"
    DTLS = "dtls"
    SRTP = "srtp"  # SRTP or SRTCP: RTCP packet types 192-223 in the second byte
    OTHER = "other"


def classify(first: int) -> PacketKind:
    """The kind of packet whose first byte is ``first``."""
    if 127 < first < 192:
        return PacketKind.SRTP
    if first < 4:
        return PacketKind.STUN
    if 19 < first < 64:
        return PacketKind.DTLS
    return PacketKind.OTHER
