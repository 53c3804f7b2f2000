"""Errors a signaling request can end in: each has a stable code the client can act on."""

from __future__ import annotations


class SignalingError(Exception):
    """A request was refused. ``code`` is stable and machine-readable; ``message`` says
    what to do; ``status`` is the HTTP status for the REST API."""

    def __init__(self, code: str, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def forbidden(code: str, message: str) -> SignalingError:
    return SignalingError(code, message, status=403)


def not_found(code: str, message: str) -> SignalingError:
    return SignalingError(code, message, status=404)


def conflict(code: str, message: str) -> SignalingError:
    return SignalingError(code, message, status=409)


def unauthorized(code: str, message: str) -> SignalingError:
    return SignalingError(code, message, status=401)
