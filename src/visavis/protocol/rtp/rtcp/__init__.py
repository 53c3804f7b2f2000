"""RTCP packets, one module per type; :func:`parse_compound` splits a compound packet.

Types: SR/RR (RFC 3550 s6.4), SDES (s6.5), BYE (s6.6), generic NACK (RFC 4585
s6.2.1), PLI (s6.3.1), FIR (RFC 5104 s4.3.1), REMB (draft-alvestrand-rmcat-remb),
transport-wide CC feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01, header
fields only). Unknown types are returned as :class:`~.compound.RtcpUnknown`.
"""

from visavis.protocol.rtp.rtcp.bye import RtcpBye
from visavis.protocol.rtp.rtcp.compound import AnyRtcp, RtcpUnknown, parse_compound
from visavis.protocol.rtp.rtcp.fir import RtcpFir
from visavis.protocol.rtp.rtcp.nack import RtcpNack
from visavis.protocol.rtp.rtcp.pli import RtcpPli
from visavis.protocol.rtp.rtcp.remb import RtcpRemb
from visavis.protocol.rtp.rtcp.report import ReportBlock, RtcpRr, RtcpSr
from visavis.protocol.rtp.rtcp.sdes import RtcpSdes
from visavis.protocol.rtp.rtcp.twcc import RtcpTwcc

__all__ = [
    "AnyRtcp",
    "ReportBlock",
    "RtcpBye",
    "RtcpFir",
    "RtcpNack",
    "RtcpPli",
    "RtcpRemb",
    "RtcpRr",
    "RtcpSdes",
    "RtcpSr",
    "RtcpTwcc",
    "RtcpUnknown",
    "parse_compound",
]
