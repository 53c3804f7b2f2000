"""Errors of the SFrame codec (RFC 9605): one class per reason a frame is refused.

Receivers turn each into a counted drop (``reason`` names the counter); none is ever
raised past the media path.
"""

from __future__ import annotations


class SFrameError(ValueError):
    """An SFrame ciphertext or key operation was refused."""

    reason = "invalid"


class TruncatedError(SFrameError):
    """The input ends before the header, the ciphertext or the tag is complete."""

    reason = "truncated"


class HeaderError(SFrameError):
    """A KID or CTR value cannot be encoded (negative or 64 bits or more)."""

    reason = "header"


class UnknownKeyError(SFrameError):
    """No key is installed for the frame's KID."""

    reason = "unknown_kid"


class AuthenticationError(SFrameError):
    """The tag does not match: the frame, its header or its metadata was altered."""

    reason = "auth"


class ReplayError(SFrameError):
    """The frame's counter was already accepted, or is older than the replay window."""

    reason = "replay"


class CounterExhaustedError(SFrameError):
    """The sender's counter would wrap: the key must be replaced before sending more."""

    reason = "counter_exhausted"
