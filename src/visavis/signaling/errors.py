"""Errors a signaling request can end in: each has a stable code the client can act on."""

from __future__ import annotations


class SignalingError(Exception):
    """A request was refused. ``code`` is stable and machine-readable; ``message`` says
    what to do; ``status`` is the HTTP status for the REST API."""

    def __init__(
        self, code: str, message: str, *, status: int = 400, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after  # seconds, sent as Retry-After


def forbidden(code: str, message: str) -> SignalingError:
    return SignalingError(code, message, status=403)


def not_found(code: str, message: str) -> SignalingError:
    return SignalingError(code, message, status=404)


def conflict(code: str, message: str) -> SignalingError:
    return SignalingError(code, message, status=409)


def unauthorized(code: str, message: str) -> SignalingError:
    return SignalingError(code, message, status=401)


def too_many(code: str, message: str, retry_after: float) -> SignalingError:
    return SignalingError(code, message, status=429, retry_after=retry_after)


def busy(code: str, message: str, retry_after: float) -> SignalingError:
    return SignalingError(code, message, status=503, retry_after=retry_after)
