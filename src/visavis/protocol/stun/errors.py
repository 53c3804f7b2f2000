"""Errors of the STUN codec.

Every failure to parse bytes raises a subclass of :class:`StunParseError` and nothing
else. When the 20-byte header could be read, the error carries it (``header``), so a
server can still answer a malformed *request* with 400 (Bad Request).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from visavis.protocol.stun.message import Header


class StunError(Exception):
    """Base of every error of the STUN codec."""


class StunParseError(StunError):
    """The bytes are not a well-formed STUN message.

    :param reason: what is wrong, for logs.
    :param header: the parsed header when the first 20 bytes were valid, else ``None``.
    :param error_code: the STUN error code a server should answer a request with.
    """

    def __init__(self, reason: str, header: Header | None = None, error_code: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.header = header
        self.error_code = error_code


class NotStun(StunParseError):
    """The bytes do not start with a STUN header (too short, top bits set, bad cookie)."""


class TruncatedMessage(StunParseError):
    """The header announces more (or fewer) bytes than were given, or is not 4-aligned."""


class MalformedAttribute(StunParseError):
    """An attribute's value does not follow its RFC encoding."""


class BadFingerprint(StunParseError):
    """FINGERPRINT is present and does not match the message."""


class StunEncodeError(StunError):
    """Local misuse: a value cannot be encoded (too long, out of range)."""
