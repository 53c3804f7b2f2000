"""ICE server lists with time-limited TURN credentials (coturn's use-auth-secret format).

username = "<expiry unix time>:<user id>", password = base64(HMAC-SHA1(secret, username)).
Any TURN server sharing the secret (ours or coturn with ``static-auth-secret``) accepts
them until the expiry, without a database lookup.
"""

from __future__ import annotations

from visavis.relay.credentials import turn_rest_credentials
from visavis.signaling.messages import IceServer


def ice_servers_for(
    urls: list[str], secret: str, user_id: str, *, now: float, ttl: int
) -> list[IceServer]:
    """STUN URLs need no credentials; TURN URLs get fresh REST credentials."""
    stun = [u for u in urls if u.startswith("stun")]
    turn = [u for u in urls if u.startswith("turn")]
    servers: list[IceServer] = []
    if stun:
        servers.append(IceServer(urls=stun))
    if turn:
        username, password = turn_rest_credentials(secret, user_id, now=now, ttl=ttl)
        servers.append(IceServer(urls=turn, username=username, credential=password))
    return servers
