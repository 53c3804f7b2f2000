"""Errors of the RTP/RTCP codecs: one sentence each, raised on malformed input."""

from __future__ import annotations


class RtpError(ValueError):
    """An RTP packet or header extension block is malformed."""


class RtcpError(RtpError):
    """An RTCP packet is malformed."""
