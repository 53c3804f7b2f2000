"""Generate ``docs/protocol.md``, ``docs/protocol.schema.json`` and ``docs/openapi.json``
from the message models, so the reference cannot drift from the code.

Run ``python -m visavis.signaling.protocol_doc docs`` after changing a message; a test
fails while the committed files differ from what this produces.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, get_args

from pydantic import TypeAdapter

from visavis.signaling import messages as m

INTRO = """\
# Signaling protocol reference

Generated from `src/visavis/signaling/messages.py` by
`python -m visavis.signaling.protocol_doc docs`: do not edit by hand.

## Transport

- REST under `/api` (OpenAPI document: `docs/openapi.json`, live at `/openapi.json` and
  `/docs`). Authenticated calls send `Authorization: Bearer <device token>`; the token
  comes from `POST /api/login` and belongs to one device.
- One WebSocket per device at `/ws`, JSON text frames of at most 64 KiB. The first frame
  is `hello` with the device token (never in the URL, so it never reaches access logs);
  the server answers `welcome` or an `error` and closes with code 4401.
- Requests carry an optional `id`; the server answers each with `result` or `error`
  whose `re` repeats it. Errors have a stable `code` and a `message` that says what to do.
- Each device connection has two token buckets (settings `rate_limit_burst` /
  `rate_limit_per_second`: 60, then 20 per second, for messages in general; `call.e2ee`
  key messages have their own, sized by `max_participants`: 4 per possible peer banked,
  2 per peer per second, since joining or leaving a group call rekeys with a message
  to every other device). A message past its bucket gets `rate_limited` and is dropped.
- Events about calls carry `seq`, numbered per device. Reconnect with
  `hello.resume_after = <last seq processed>` within the grace period (60 s by default)
  to receive every event sent meanwhile, in order, exactly once. `welcome.resumed=false`
  means some were lost: fetch state over REST. Send `ack` with a seq to let the server
  forget what you have.
- Close codes: 4400 protocol violation before authentication, 4401 bad or revoked token,
  4409 replaced by a newer connection of the same device, 1001 server shutting down.

## A 1:1 call

1. Caller: `call.invite` → `result{call_id}`; every device of the callee gets
   `call.incoming`; the caller gets `call.ringing` (how many devices ring).
2. One callee device: `call.answer`. Its other devices get
   `call.stop_ringing{reason: answered_elsewhere}`; the caller gets
   `call.participant{state: joined, device_id}`.
3. The caller's device sends `call.signal{description: offer}`; the answering device
   replies `call.signal{description: answer}`; both trickle `call.signal{candidate}`.
   Signals only ever reach the other device in the call.
   Screen sharing: the browser client's offer has audio, the camera's video and a
   second video m-line, its *screen slot* (sendrecv, sending nothing until a share);
   either side puts a screen share there without renegotiating and says so with
   `call.signal{screen: true}` (`false` when it stops), so the other side shows it as a
   tile of its own. An offer without a screen slot (the Python SDK's) gets the share in
   place of the camera.
4. Either side: `call.leave` → the other gets `call.ended{reason: hangup}`.

Other endings: `call.decline` (caller gets `call.ended{reason: declined}`), `call.cancel`
by the caller (callee devices get `call.stop_ringing{reason: cancelled}`), no answer within
the ring timeout (30 s: `call.stop_ringing{reason: timeout}`, `call.ended{reason:
no_answer}`).

## Group calls

With three or more people (at `call.invite`, or when `call.add` grows a 1:1 call) the call
goes through the SFU: each device in the call gets `call.room{url, room_id, token}` and
joins the room there (see `docs/sfu.md`). A decline only takes that person out.

## Call links and guests

1. A signed-in user: `POST /api/links {media, ttl_hours}` → `{id, token, expires_at}`; the
   link is `/#join=<token>` on this server (the token is in this answer only). `GET
   /api/links` lists the usable ones; `DELETE /api/links/{id}` revokes one.
2. The owner opens its call on a device: `call.link_join{link_id}` → `result{call_id}` and
   `call.room` (a group call through the SFU, the owner alone at first).
3. Someone without an account: `GET /api/join/<token>` (whose call) then `POST
   /api/join/<token> {display_name}` → `{token, guest}`: a guest token that opens
   `/api/guest` (and, once admitted, `/api/guest/e2ee` and `/api/guest/reaction`) and
   nothing else. The devices in the link's call (or all the
   owner's devices while no call goes on) get `call.guest{state: waiting}`.
4. A device in the call: `call.admit{call_id, guest_id}` (or `call.refuse`). The guest's
   next `GET /api/guest` says `admitted` with a `room` (an SFU token for this call only;
   there the guest is `guest:<name>/<guest id>`, and no handle contains `:`).
5. A guest has no device socket, so what devices send over it, a guest sends over REST:
   its end-to-end key messages with `POST /api/guest/e2ee` (relayed as `call.e2ee`) and
   its sealed reactions with `POST /api/guest/reaction {call_id, payload}` (relayed as
   `call.reaction` to everyone else in the call, rate limited as a device's: 429
   `reaction_rate_limited`). `call.e2ee` addressed to it and everyone's `call.reaction`
   wait in its mailbox: `GET /api/guest/e2ee?after=N` (polled; `last` is the next `N`).
   All of it only while admitted to a live call, and only its own (403 `not_in_call`).
6. The call ends as any group call does, when its last signed-in participant leaves;
   `GET /api/guest` then says `ended`.

Refusals: an unknown token is 404 `link_not_found`, a revoked link 410 `link_revoked`, an
expired one 410 `link_expired` (guests still waiting on a revoked or expired link get the
same answer from `/api/guest`); a guest token anywhere else is 401. Each is counted in
`visavis_rejected_messages_total{reason}`.

## Messages
"""


def _section(title: str, models: list[type[m.Model]]) -> list[str]:
    lines = [f"\n### {title}\n"]
    for model in models:
        schema = model.model_json_schema()
        type_field = model.model_fields.get("type")
        name = type_field.default if type_field and isinstance(type_field.default, str) else None
        if name is None and type_field is not None:
            name = get_args(type_field.annotation)[0]
        lines.append(f"\n#### `{name or model.__name__}` ({model.__name__})\n")
        if model.__doc__:
            lines.append(model.__doc__.strip().splitlines()[0] + "\n")
        lines.append("\n| field | type | required | description |\n|---|---|---|---|")
        required = set(schema.get("required", []))
        for field_name, prop in schema.get("properties", {}).items():
            if field_name == "type":
                continue
            lines.append(
                f"| `{field_name}` | {_type(prop)} | {'yes' if field_name in required else 'no'}"
                f" | {prop.get('description', '')} |"
            )
    return lines


def _type(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in prop:
        return " or ".join(_type(p) for p in prop["anyOf"])
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    if prop.get("type") == "array":
        return f"list of {_type(prop.get('items', {}))}"
    return str(prop.get("type", "any"))


CLIENT = list(m.CLIENT_MODELS)
SERVER = list(m.SERVER_MODELS)
PARTS = [m.UserInfo, m.ParticipantInfo, m.SessionDescription, m.IceCandidate, m.IceServer]


def render() -> dict[str, str]:
    """The generated files, by name."""
    from visavis.signaling.app import SignalingContext, create_app

    doc = [INTRO]
    doc += _section("Device → server", CLIENT)
    doc += _section("Server → device", SERVER)
    doc += _section("Shared parts", PARTS)  # type: ignore[arg-type]
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "visavis signaling WebSocket messages",
        "client": TypeAdapter(m.ClientMessage).json_schema(),
        "server": TypeAdapter(m.ServerMessage).json_schema(),
    }
    app = create_app(SignalingContext.__new__(SignalingContext))  # routes only, no services
    return {
        "protocol.md": "\n".join(doc) + "\n",
        "protocol.schema.json": json.dumps(schema, indent=2, sort_keys=True) + "\n",
        "openapi.json": json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n",
    }


def main(argv: list[str]) -> None:
    out = Path(argv[0] if argv else "docs")
    out.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (out / name).write_text(text)
        print(f"wrote {out / name}")


if __name__ == "__main__":
    main(sys.argv[1:])
