"""Errors of the SFU: each carries the code the control protocol sends back."""

from __future__ import annotations


class SfuError(Exception):
    """A request the SFU refuses; ``code`` is sent to the client in an ``error`` message."""

    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SdpError(SfuError):
    """The offer is malformed or asks for something the SFU cannot do."""

    code = "bad_sdp"


class AuthError(SfuError):
    """The join token is missing, forged, expired or for another room."""

    code = "unauthorized"


class ProtocolError(SfuError):
    """A control message is malformed or not allowed in the session's state."""

    code = "protocol_error"


class CodecError(SdpError):
    """The offer lacks the room's video codec: this client cannot take part in it."""

    code = "unsupported_codec"
