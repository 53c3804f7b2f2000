"""STUN (RFC 8489) as the relay and clients read it: header, attributes, integrity.

After a successful parse the harness does what a server does next with a message from
the network: looks for unknown comprehension-required attributes, checks integrity with
some key, and encodes the message back (which may refuse only with StunEncodeError).
"""

from __future__ import annotations

import contextlib

from fuzz.contract import Target
from visavis.protocol.stun import (
    StunEncodeError,
    StunParseError,
    is_stun,
    parse_message,
)


def one_input(data: bytes) -> None:
    is_stun(data)
    message = parse_message(data)
    message.unknown_required()
    message.check_integrity(b"key")
    with contextlib.suppress(StunEncodeError):
        message.encode()


TARGET = Target("stun", one_input, (StunParseError,), max_len=1500)
