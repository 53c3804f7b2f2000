"""TURN REST credentials (coturn's ``use-auth-secret`` format), for signaling to mint."""

from __future__ import annotations

from visavis.protocol.turn.auth import rest_credentials, rest_password


def turn_rest_credentials(secret: str, user: str, *, now: float, ttl: int) -> tuple[str, str]:
    """Return (username, password) for ``user``, valid until ``now + ttl``.

    ``username`` is ``"<expiry unix>:<user>"`` and ``password`` is
    ``base64(HMAC-SHA1(secret, username))``: coturn and visavis both accept them.
    """
    return rest_credentials(secret, user, now=now, ttl=ttl)


__all__ = ["rest_password", "turn_rest_credentials"]
