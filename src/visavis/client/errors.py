"""Errors of the client SDK: each says what went wrong and what to do next."""

from __future__ import annotations


class ClientError(Exception):
    """Base class of every error the SDK raises."""


class AuthError(ClientError):
    """Signaling refused the credentials or the device token: sign in again."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RequestError(ClientError):
    """Signaling answered a request with an error (``code`` as in docs/protocol.md)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class NotConnected(ClientError):
    """The device connection is down (it reconnects by itself; retry later)."""


class CallFailed(ClientError):
    """A call ended without connecting, or broke.

    ``reason`` is one of :data:`visavis.client.call.FAILURE_REASONS`; ``detail`` says more.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
