"""Errors of the TURN core.

Handlers raise :class:`TurnError` carrying the STUN error code to answer with; the
dispatcher turns it into an error response. :class:`CapacityError` is what a relay
allocator raises when it has no port left (the client hears 508).
"""

from __future__ import annotations

from visavis.protocol.stun.constants import REASONS


class TurnError(Exception):
    """A request fails with ``code`` (RFC 8656 error codes); ``reason`` is sent verbatim."""

    def __init__(self, code: int, reason: str | None = None) -> None:
        self.code = code
        self.reason = REASONS.get(code, "Error") if reason is None else reason
        super().__init__(f"{code} {self.reason}")


class CapacityError(Exception):
    """The relay allocator cannot open another relay socket (port range exhausted)."""


class FramingError(Exception):
    """A stream carried bytes that are neither STUN nor ChannelData: close the connection."""


class ChannelDataError(Exception):
    """The bytes are not a well-formed ChannelData message (dropped, counted)."""
