"""Sans-I/O RTP (RFC 3550), header extensions (RFC 8285) and RTCP (RFC 3550, 4585, 5104).

Bytes in, frozen dataclasses out; no sockets, no clock. Parsers raise
:class:`~visavis.protocol.rtp.errors.RtpError` (or its RTCP subclass) on malformed input.
"""

from visavis.protocol.rtp.errors import RtcpError, RtpError
from visavis.protocol.rtp.packet import RtpPacket, is_rtcp

__all__ = ["RtcpError", "RtpError", "RtpPacket", "is_rtcp"]
