"""The SFU's control messages (JSON over its WebSocket), validated as the server does.

A frame is text (valid UTF-8) or binary (any bytes); both go to ``validate_json``, which
must reject bad input with pydantic's ValidationError only. The error replies the server
then builds from that ValidationError (``_brief`` after join, the message text before)
must serialize too: a reply that cannot be sent would break the connection's send loop.
"""

from __future__ import annotations

import contextlib

from pydantic import ValidationError

from fuzz.contract import Target
from visavis.sfu.messages import Error, client_message_adapter
from visavis.sfu.server import _brief


def one_input(data: bytes) -> None:
    frames: list[str | bytes] = [data]
    with contextlib.suppress(UnicodeDecodeError):
        frames.append(data.decode("utf-8"))
    for frame in frames:
        try:
            client_message_adapter.validate_json(frame)
        except ValidationError as exc:
            Error(code="protocol_error", message=_brief(exc)).model_dump_json()
            Error(code="protocol_error", message=f"expected join: {exc!s:.200}").model_dump_json()


_TOKENS = (
    '"type":',
    '"join"',
    '"offer"',
    '"layout"',
    '"leave"',
    '"token":',
    '"sdp":',
    '"visible":',
    '"\\udc80"',
    "1e999",
    "[[[[",
    "null",
)
TARGET = Target(
    "sfu_json", one_input, (), max_len=8192, dictionary=tuple(t.encode() for t in _TOKENS)
)
