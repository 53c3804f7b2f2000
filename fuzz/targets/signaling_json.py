"""Signaling's WebSocket requests, read the way ``signaling/app.py`` reads a text frame.

The steps mirror ``_handshake`` (``validate_json`` of the first frame) and
``_handle_frame`` (``json.loads``, the ``id`` echo, ``validate_python``, and the
``invalid_message`` / ``unknown_type`` reply built from the ValidationError); each reply
is then serialized as the server sends it (``model_dump(mode="json")`` then Starlette's
``json.dumps(ensure_ascii=False)`` encoded as UTF-8), because a reply that cannot be sent
breaks the connection. REST bodies (signup, login) are validated too. A WebSocket text
frame is valid UTF-8 by the protocol, so inputs that are not are skipped.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from pydantic import ValidationError

from fuzz.contract import Target
from visavis.signaling import messages as m

MAX_MESSAGE_BYTES = 64 * 1024  # config.max_message_bytes default


def _send(message: m.Model) -> None:
    data = message.model_dump(mode="json", exclude_none=True)
    json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _handshake(text: str) -> None:
    try:
        m.client_message_adapter.validate_json(text)
    except ValidationError:
        _send(m.Error(code="hello_required", message="send {type: 'hello', token} first"))


def _frame(text: str) -> None:
    if len(text.encode()) > MAX_MESSAGE_BYTES:
        return
    try:
        raw: Any = json.loads(text)
    except (ValueError, RecursionError):
        raw = None
    re = raw.get("id") if isinstance(raw, dict) else None
    re = re if isinstance(re, str | int) and not isinstance(re, bool) else None
    if raw is None:
        _send(m.Error(re=re, code="malformed_json", message="the message is not valid JSON"))
        return
    try:
        m.client_message_adapter.validate_python(raw)
    except ValidationError as exc:
        kind = raw.get("type") if isinstance(raw, dict) else None
        if not isinstance(kind, str) or kind not in m.CLIENT_TYPES:
            message = f"unknown message type {kind!r}"
            _send(m.Error(re=re, code="unknown_type", message=message))
        else:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"][1:]) or kind
            _send(m.Error(re=re, code="invalid_message", message=f"{where}: {first['msg']}"))


def _rest(text: str) -> None:
    for model in (m.SignupRequest, m.LoginRequest, m.PushSubscription):
        with contextlib.suppress(ValidationError):
            model.model_validate_json(text)


def one_input(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    _handshake(text)
    _frame(text)
    _rest(text)


_TOKENS = (
    *(f'"{t}"' for t in sorted(m.CLIENT_TYPES)),
    *(f'"{f}":' for f in ("type", "id", "token", "resume_after", "seq", "handles", "handle")),
    *(f'"{f}":' for f in ("media", "call_id", "end_current", "description", "candidate")),
    *(f'"{f}":' for f in ("sdp", "sdpMid", "sdpMLineIndex", "usernameFragment", "password")),
    *(f'"{f}":' for f in ("device_name", "device_kind", "display_name", "endpoint", "keys")),
    '"\\udc80"',
    '"\\ud800"',
    "1e999",
    "-0",
    "[[[[",
    "null",
    "true",
    '"audio"',
    '"video"',
    '"offer"',
    '"+15551234567"',
    '"a@b.co"',
)
TARGET = Target(
    "signaling_json",
    one_input,
    (),
    max_len=8192,
    dictionary=tuple(t.encode() for t in _TOKENS),
)
