"""Compound RTCP datagrams (RFC 3550 6.1, RFC 4585, RFC 5104) as the SFU reads them.

Every packet :func:`parse_compound` returns that has a ``serialize`` must also encode
back (a parsed packet is a valid one).
"""

from __future__ import annotations

from fuzz.contract import Target
from visavis.protocol.rtp import RtcpError
from visavis.protocol.rtp.rtcp import parse_compound


def one_input(data: bytes) -> None:
    for packet in parse_compound(data):
        serialize = getattr(packet, "serialize", None)
        if serialize is not None:
            serialize()


TARGET = Target("rtcp", one_input, (RtcpError,), max_len=1500)
