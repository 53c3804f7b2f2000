"""ICE-lite (RFC 8445 s2.5): answer connectivity checks, never send any.

A lite agent is always controlled; the full agent (the client) nominates a pair with
USE-CANDIDATE. The shared UDP port finds a transport by the local half of the STUN
USERNAME (``<sfu ufrag>:<client ufrag>``) and authenticates with that transport's
password (short-term credentials, RFC 8489 s9.1).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from aioice import stun


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Outcome of one binding request: the response to send, and whether it nominated."""

    response: bytes
    nominated: bool


def parse_request(data: bytes) -> tuple[stun.Message, str] | None:
    """Return (message, local ufrag) for a binding request, or None if it is not one."""
    try:
        message = stun.parse_message(data)
    except (ValueError, KeyError, IndexError, struct.error):  # aioice's parse failures
        return None
    if message.message_method != stun.Method.BINDING or message.message_class != stun.Class.REQUEST:
        return None
    username = message.attributes.get("USERNAME")
    if not isinstance(username, str) or ":" not in username:
        return None
    return message, username.split(":", 1)[0]


def answer_check(
    message: stun.Message, addr: tuple[str, int], local_pwd: str, remote_ufrag: str
) -> CheckResult | None:
    """Authenticate a binding request and build the success response, or None to drop."""
    username = message.attributes.get("USERNAME", "")
    if username.split(":", 1)[1:] != [remote_ufrag]:
        return None
    if not message.check_message_integrity(local_pwd.encode()):
        return None
    response = stun.Message(
        stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=message.transaction_id
    )
    response.attributes["XOR-MAPPED-ADDRESS"] = addr
    response.add_message_integrity(local_pwd.encode())
    response.add_fingerprint()
    return CheckResult(bytes(response), "USE-CANDIDATE" in message.attributes)
