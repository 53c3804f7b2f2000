"""ICE-lite (RFC 8445 s2.5), sans-I/O: answer connectivity checks, never send any.

A lite agent is always controlled; the full agent (the client) nominates a pair with
USE-CANDIDATE. A server with one UDP port for every participant finds the participant by
the local half of the STUN USERNAME (``<local ufrag>:<remote ufrag>``, RFC 8445 s7.2.2)
and authenticates with that participant's password (short-term credentials, RFC 8489
s9.1). Built on the project's STUN codec (:mod:`visavis.protocol.stun`): a request with
a bad FINGERPRINT, a bad MESSAGE-INTEGRITY or no USERNAME is dropped, never answered.
"""

from __future__ import annotations

from dataclasses import dataclass

from visavis.protocol.stun import (
    Message,
    MessageClass,
    Method,
    StunError,
    UseCandidate,
    Username,
    XorMappedAddress,
    parse_message,
    short_term_key,
)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Outcome of one binding request: the response to send, and whether it nominated."""

    response: bytes
    nominated: bool


def parse_request(data: bytes) -> tuple[Message, str] | None:
    """Return (message, local ufrag) for a binding request, or None if it is not one
    (never raises: this is the first thing an unauthenticated datagram meets)."""
    try:
        message = parse_message(data)
    except StunError:
        return None
    if message.method != Method.BINDING or message.cls != MessageClass.REQUEST:
        return None
    username = message.get(Username)
    if username is None or ":" not in username.value:
        return None
    return message, username.value.split(":", 1)[0]


def answer_check(
    message: Message, addr: tuple[str, int], local_pwd: str, remote_ufrag: str
) -> CheckResult | None:
    """Authenticate a binding request and build the success response (XOR-MAPPED-ADDRESS
    ``addr``, MESSAGE-INTEGRITY, FINGERPRINT), or None to drop it."""
    username = message.get(Username)
    if username is None or username.value.split(":", 1)[1:] != [remote_ufrag]:
        return None
    key = short_term_key(local_pwd)
    if not message.check_integrity(key):
        return None
    try:
        mapped = XorMappedAddress.of(addr[0], addr[1])
    except ValueError:
        return None
    response = Message(Method.BINDING, MessageClass.SUCCESS, message.transaction_id, (mapped,))
    return CheckResult(
        response.encode(key=key, fingerprint=True), message.get(UseCandidate) is not None
    )
