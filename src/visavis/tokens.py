"""Short signed tokens that signaling hands out and other parts (SFU) verify.

Format: ``base64url(json payload) + "." + base64url(HMAC-SHA256(secret, payload part))``.
The payload always carries ``exp`` (Unix seconds). Verification is constant-time and
rejects expired tokens, so a leaked join token is useless after its short lifetime.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any


class TokenError(ValueError):
    """The token is malformed, forged or expired."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_token(secret: str, payload: dict[str, Any], *, now: float, ttl: float) -> str:
    """Return a token for ``payload`` valid for ``ttl`` seconds from ``now``."""
    body = dict(payload, exp=int(now + ttl))
    part = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(secret.encode(), part.encode(), hashlib.sha256).digest()
    return f"{part}.{_b64(mac)}"


def verify_token(secret: str, token: str, *, now: float) -> dict[str, Any]:
    """Return the payload of a valid token, or raise :class:`TokenError` saying why not."""
    try:
        part, mac_text = token.split(".", 1)
        mac = _unb64(mac_text)
    except ValueError as exc:
        raise TokenError("malformed token") from exc
    expected = hmac.new(secret.encode(), part.encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected):
        raise TokenError("bad token signature")
    try:
        payload = json.loads(_unb64(part))
    except ValueError as exc:
        raise TokenError("malformed token payload") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int):
        raise TokenError("malformed token payload")
    if payload["exp"] < now:
        raise TokenError("token expired")
    return payload
