"""Every message of the signaling protocol, as pydantic models.

The WebSocket carries JSON objects with a ``type`` field. A device sends requests
(:data:`ClientMessage`), each with an optional ``id`` that the answer (``result`` or
``error``) repeats in ``re``. The server sends events (:data:`ServerEvent`); events about
calls carry ``seq``, the device's mailbox number: a device that reconnects sends the last
``seq`` it processed in ``hello.resume_after`` and receives everything after it, in order,
exactly once. ``docs/protocol.md`` and ``docs/protocol.schema.json`` are generated from
these models (``python -m visavis.signaling.protocol_doc``) and a test keeps them in sync.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from visavis.store.base import DeviceKind, GuestState, MediaKind, ParticipantRole, ParticipantState

HANDLE_EMAIL = re.compile(r"^[a-z0-9._%+-]{1,64}@[a-z0-9.-]{1,189}\.[a-z]{2,63}$")
HANDLE_PHONE = re.compile(r"^\+[1-9][0-9]{6,14}$")
MAX_SDP = 60_000
MAX_E2EE_PAYLOAD = 4096
MAX_REACTION_PAYLOAD = 512
IDENTITY_KEY = r"^[A-Za-z0-9_-]{43}$"  # an Ed25519 public key, base64url without padding


def normalize_handle(value: str) -> str:
    """Lower-case an email-like handle, strip spaces and dashes from a phone-like one."""
    value = value.strip()
    value = re.sub(r"[\s\-().]", "", value) if value.startswith("+") else value.lower()
    if not (HANDLE_EMAIL.match(value) or HANDLE_PHONE.match(value)):
        raise ValueError("a handle is an email address or an E.164 phone number like +15551234567")
    return value


Handle = Annotated[str, Field(min_length=3, max_length=254, examples=["alice@example.com"])]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------- shared parts
class UserInfo(Model):
    handle: str
    display_name: str


class SessionDescription(Model):
    type: Literal["offer", "answer"]
    sdp: str = Field(max_length=MAX_SDP)


class IceCandidate(Model):
    candidate: str = Field(max_length=1024)
    sdpMid: str | None = Field(default=None, max_length=64)
    sdpMLineIndex: int | None = Field(default=None, ge=0, le=1024)
    usernameFragment: str | None = Field(default=None, max_length=256)


class IceServer(Model):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


# ---------------------------------------------------------------------- client → server
class Request(Model):
    id: str | int | None = Field(default=None, description="echoed in the answer's `re`")


class CallRequest(Request):
    """A request about one call."""

    call_id: str = Field(max_length=64)


class Hello(Request):
    """First message on a new connection: authenticate as a device."""

    type: Literal["hello"]
    token: str = Field(max_length=256)
    resume_after: int | None = Field(
        default=None, ge=0, description="last seq processed; omit on a fresh start"
    )


class Ping(Request):
    type: Literal["ping"]


class Ack(Request):
    """The device has processed every event up to ``seq``: the server may forget them."""

    type: Literal["ack"]
    seq: int = Field(ge=0)


class CallInvite(Request):
    """Start a call: every device of every callee rings."""

    type: Literal["call.invite"]
    handles: list[Handle] = Field(min_length=1, max_length=64)
    media: MediaKind = "video"


class CallAnswer(CallRequest):
    type: Literal["call.answer"]
    end_current: bool = Field(
        default=False, description="leave the calls this user is in, then answer"
    )


class CallDecline(CallRequest):
    type: Literal["call.decline"]


class CallCancel(CallRequest):
    """The caller gives up before anyone answered."""

    type: Literal["call.cancel"]


class CallLeave(CallRequest):
    """Hang up: a 1:1 call ends; a group call goes on without this participant."""

    type: Literal["call.leave"]


class CallAdd(CallRequest):
    """Invite more people into a call this device is in."""

    type: Literal["call.add"]
    handles: list[Handle] = Field(min_length=1, max_length=64)


class CallRingAgain(CallRequest):
    """Ring again someone who missed, declined or left the call."""

    type: Literal["call.ring_again"]
    handle: Handle


SCREEN_DOC = (
    "this device started (true) or stopped (false) sending a screen share on the "
    "offer's second video m-line (its screen slot)"
)


class CallSignal(CallRequest):
    """SDP, an ICE candidate or a screen-share change for the other device of a 1:1 call."""

    type: Literal["call.signal"]
    description: SessionDescription | None = None
    candidate: IceCandidate | None = None
    screen: bool | None = Field(default=None, description=SCREEN_DOC)


class CallE2ee(CallRequest):
    """End-to-end key material for other devices of this call (visavis.e2ee.keys).

    The payload is signed and, for sender keys, encrypted by the sending device: the
    server relays it and can drop it, but cannot read or forge it."""

    type: Literal["call.e2ee"]
    to_device: str | None = Field(
        default=None, max_length=64, description="one device in the call; omit for all others"
    )
    payload: str = Field(min_length=1, max_length=MAX_E2EE_PAYLOAD)


class CallReaction(CallRequest):
    """A reaction (hearts, fireworks...) for the other devices of this call, sealed by the
    sending browser with its end-to-end keys (docs/effects.md, "Reactions"): the server
    relays the ciphertext, rate limited per device, and can read none of it."""

    type: Literal["call.reaction"]
    payload: str = Field(
        min_length=1,
        max_length=MAX_REACTION_PAYLOAD,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="the sealed reaction, base64url without padding",
    )


class CallHandoff(CallRequest):
    """Move this user's place in a live call to this device."""

    type: Literal["call.handoff"]


class CallMediaLost(CallRequest):
    """This device lost its connection to the call's media server (SFU): once enough of
    the call's devices say so, signaling moves the room at once instead of waiting for
    the server's registry record to expire (``docs/fleet.md``)."""

    type: Literal["call.media_lost"]
    url: str = Field(max_length=2048, description="the SFU control URL it lost")


class CallLinkJoin(Request):
    """The link's owner opens its call: starts it (a group call through the SFU, with
    only the owner in it) or rejoins the one going on; answered with its ``call_id``."""

    type: Literal["call.link_join"]
    link_id: str = Field(max_length=64)


class CallAdmit(CallRequest):
    """Let a guest waiting in the lobby of this call's link in."""

    type: Literal["call.admit"]
    guest_id: str = Field(max_length=64)


class CallRefuse(CallRequest):
    """Turn away a guest waiting in the lobby of this call's link."""

    type: Literal["call.refuse"]
    guest_id: str = Field(max_length=64)


ClientMessage = Annotated[
    Hello
    | Ping
    | Ack
    | CallInvite
    | CallAnswer
    | CallDecline
    | CallCancel
    | CallLeave
    | CallAdd
    | CallRingAgain
    | CallSignal
    | CallE2ee
    | CallReaction
    | CallHandoff
    | CallMediaLost
    | CallLinkJoin
    | CallAdmit
    | CallRefuse,
    Field(discriminator="type"),
]
client_message_adapter: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)
LINK_REQUESTS = (CallLinkJoin, CallAdmit, CallRefuse)


# ---------------------------------------------------------------------- server → client
class Welcome(Model):
    type: Literal["welcome"] = "welcome"
    user: UserInfo
    device_id: str
    resumed: bool = Field(description="false: events were lost; resynchronise from REST")
    head: int = Field(description="the seq of the newest event for this device")
    ice_servers: list[IceServer]


class Result(Model):
    type: Literal["result"] = "result"
    re: str | int | None
    call_id: str | None = None


class Error(Model):
    type: Literal["error"] = "error"
    re: str | int | None = None
    code: str
    message: str


class Pong(Model):
    type: Literal["pong"] = "pong"
    re: str | int | None = None


class Event(Model):
    seq: int = 0


class ParticipantInfo(Model):
    user: UserInfo
    state: ParticipantState


class CallIncoming(Event):
    """Ring: this device should alert its user."""

    type: Literal["call.incoming"] = "call.incoming"
    call_id: str
    caller: UserInfo
    participants: list[ParticipantInfo]
    media: MediaKind
    group: bool
    call_waiting: bool = Field(description="the user is already in another call")
    ring_deadline: float


class CallStopRinging(Event):
    type: Literal["call.stop_ringing"] = "call.stop_ringing"
    call_id: str
    reason: Literal["answered_elsewhere", "declined_elsewhere", "timeout", "cancelled", "ended"]
    device_id: str | None = Field(default=None, description="the device that answered")


class CallRinging(Event):
    """To the devices in a call: these people's devices are ringing."""

    type: Literal["call.ringing"] = "call.ringing"
    call_id: str
    user: UserInfo
    devices: int


class CallParticipant(Event):
    """To the devices in a call: someone joined, declined, missed, left or moved device."""

    type: Literal["call.participant"] = "call.participant"
    call_id: str
    user: UserInfo
    state: ParticipantState | Literal["handoff"]
    device_id: str | None = None


class CallSignalEvent(Event):
    type: Literal["call.signal"] = "call.signal"
    call_id: str
    from_user: str
    from_device: str
    description: SessionDescription | None = None
    candidate: IceCandidate | None = None
    screen: bool | None = Field(default=None, description=SCREEN_DOC)


class CallE2eeEvent(Event):
    """End-to-end key material from another device of the call (opaque to the server)."""

    type: Literal["call.e2ee"] = "call.e2ee"
    call_id: str
    from_user: str
    from_device: str
    payload: str


class CallReactionEvent(Event):
    """A sealed reaction from another device of the call (opaque to the server)."""

    type: Literal["call.reaction"] = "call.reaction"
    call_id: str
    from_user: str
    from_device: str
    payload: str


class CallRoom(Event):
    """This call goes through the SFU: join this room with this token."""

    type: Literal["call.room"] = "call.room"
    call_id: str
    room_id: str
    url: str
    token: str


class CallRoomMoved(Event):
    """The call's room moved to another media server (the one it was on died or is
    draining): leave the old one and join this room with this token now. The call itself
    goes on: nothing rings, nobody left, the call's state does not change."""

    type: Literal["call.room_moved"] = "call.room_moved"
    call_id: str
    room_id: str
    url: str
    token: str
    reason: Literal["failover", "drain"]


class GuestInfo(Model):
    """Someone in a call through a link, without an account: in the SFU their participant
    id is ``guest:<display name>/<guest id>`` (no handle contains ``:``)."""

    id: str
    display_name: str
    guest: Literal[True] = True


class CallGuest(Event):
    """A guest of this user's call link: waiting in the lobby (admit or refuse them),
    admitted, refused or gone. To the devices in the link's call, or to every device of
    the link's owner while no call is going on."""

    type: Literal["call.guest"] = "call.guest"
    call_id: str | None = None
    link_id: str
    guest: GuestInfo
    state: GuestState


EndReason = Literal["hangup", "declined", "no_answer", "cancelled", "handoff", "left"]


class CallEnded(Event):
    """This device is no longer in the call."""

    type: Literal["call.ended"] = "call.ended"
    call_id: str
    reason: EndReason


_Events = (
    CallIncoming
    | CallStopRinging
    | CallRinging
    | CallParticipant
    | CallSignalEvent
    | CallE2eeEvent
    | CallReactionEvent
    | CallRoom
    | CallRoomMoved
    | CallEnded
    | CallGuest
)
ServerEvent = Annotated[_Events, Field(discriminator="type")]
ServerMessage = Annotated[Welcome | Result | Error | Pong | _Events, Field(discriminator="type")]


# ---------------------------------------------------------------------------- REST bodies
class SignupRequest(Model):
    handle: Handle
    password: str = Field(min_length=8, max_length=1024)
    display_name: str | None = Field(default=None, max_length=100)

    @field_validator("handle")
    @classmethod
    def _handle(cls, value: str) -> str:
        return normalize_handle(value)


class LoginRequest(Model):
    """Sign in on a device: returns that device's own token."""

    handle: Handle
    password: str = Field(max_length=1024)
    device_name: str = Field(min_length=1, max_length=100)
    device_kind: DeviceKind = "browser"

    @field_validator("handle")
    @classmethod
    def _handle(cls, value: str) -> str:
        return normalize_handle(value)


class UserOut(Model):
    id: str
    handle: str
    display_name: str


class DeviceOut(Model):
    id: str
    name: str
    kind: DeviceKind
    created_at: float
    online: bool
    current: bool = False


class DeviceKeyIn(Model):
    """This device's identity public key; the private half never leaves the device."""

    public_key: str = Field(pattern=IDENTITY_KEY)


class DeviceKeyOut(Model):
    device_id: str
    name: str
    public_key: str = Field(description="Ed25519, base64url: pin it at first sight")


class LoginResponse(Model):
    token: str = Field(description="send as `Authorization: Bearer` and in `hello`")
    user: UserOut
    device: DeviceOut


class ContactOut(Model):
    handle: str
    display_name: str
    reachable: bool = Field(description="at least one of their devices is connected")


HistoryState = Literal["answered", "missed", "declined", "cancelled", "ongoing"]


class HistoryParticipant(Model):
    user: UserInfo
    role: ParticipantRole
    state: ParticipantState


class HistoryEntry(Model):
    call_id: str
    direction: Literal["outgoing", "incoming"]
    media: MediaKind
    state: HistoryState
    participants: list[HistoryParticipant]
    guests: list[GuestInfo] = Field(
        default_factory=list,
        description="people without an account let into the call through a call link",
    )
    started_at: float
    duration: float = Field(description="seconds connected; 0 when never answered")


class PushSubscription(Model):
    """A browser's PushSubscription.toJSON()."""

    endpoint: str = Field(max_length=2048)
    keys: dict[str, str]


class IceServersOut(Model):
    ice_servers: list[IceServer]
    ttl: int


class CallLinkIn(Model):
    media: MediaKind = "video"
    ttl_hours: int = Field(default=24, ge=1, le=24 * 30, description="the link expires after")


class CallLinkOut(Model):
    id: str
    media: MediaKind
    created_at: float
    expires_at: float
    revoked: bool
    call_id: str | None = Field(description="the call going on through it, if any")
    token: str | None = Field(
        default=None,
        description="only in the answer that creates it (the server keeps a hash): the "
        "link is `/#join=<token>` on this server",
    )


class LinkInfoOut(Model):
    """What a guest sees of a link before giving a name (no account needed)."""

    owner: UserInfo
    media: MediaKind
    expires_at: float


class GuestJoinIn(Model):
    display_name: str = Field(min_length=1, max_length=60, pattern=r"^[^/:\x00-\x1f]+$")

    @field_validator("display_name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("say your name")
        return value


class GuestJoinOut(Model):
    token: str = Field(
        description="the guest's own token: `Authorization: Bearer` for "
        "/api/guest, and nothing else"
    )
    guest: GuestInfo


class GuestE2eeIn(Model):
    """A guest's end-to-end key material for devices of its call (as ``call.e2ee``)."""

    to_device: str | None = Field(
        default=None, max_length=64, description="one device in the call; omit for all"
    )
    payload: str = Field(min_length=1, max_length=MAX_E2EE_PAYLOAD)


class GuestE2eeOut(Model):
    """This guest's mailbox after sequence number ``after``, oldest first: ``call.e2ee``
    key messages and ``call.reaction`` reactions; ``last`` is the number to ask after
    next time (asking after it acknowledges everything up to it)."""

    events: list[Annotated[CallE2eeEvent | CallReactionEvent, Field(discriminator="type")]]
    last: int


class GuestReactionIn(Model):
    """A guest's sealed reaction for everyone else in its call (as ``call.reaction``)."""

    call_id: str = Field(max_length=64, description="the guest's own call; any other is refused")
    payload: str = Field(
        min_length=1,
        max_length=MAX_REACTION_PAYLOAD,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="the sealed reaction, base64url without padding",
    )


class GuestStatusOut(Model):
    """A guest's lobby: ``waiting`` until a participant admits (``admitted``, with a
    room to join through the SFU) or refuses them; ``ended`` once the call is over."""

    guest: GuestInfo
    state: GuestState | Literal["ended"]
    owner: UserInfo
    media: MediaKind
    room: CallRoom | None = None
    ice_servers: list[IceServer] = []


class ErrorOut(Model):
    code: str
    message: str


def _members(union: object) -> tuple[type[Model], ...]:
    """The models of an ``Annotated[A | B | ..., Field(discriminator=...)]`` union."""
    return get_args(get_args(union)[0])


CLIENT_MODELS = _members(ClientMessage)
SERVER_MODELS = _members(ServerMessage)
CLIENT_TYPES = frozenset(get_args(m.model_fields["type"].annotation)[0] for m in CLIENT_MODELS)
