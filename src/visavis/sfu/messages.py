"""The SFU control protocol: JSON messages over one WebSocket per participant.

Flow (the client always offers, the SFU always answers)::

    client                                   SFU
    join {token}                      ->
                                      <-     joined {participant_id, participants, audio, video,
                                                     video_codec}  (offer only that codec)
    offer {sdp, screen?}  (sendonly m-lines to publish, recvonly m-lines as receive slots;
                           screen: the mids that carry a screen share)
                                      ->
                                      <-     answer {sdp, streams}
                                      <-     renegotiate {audio, video}   (more slots needed,
                                             or slots changed: add that many recvonly
                                             transceivers of each kind, then offer again)
                                      <-     participant_joined / participant_left
                                      <-     dominant_speaker {participant_id}
    layout {visible, thumbnails?}     ->     (tiles shown: high layers for visible,
                                              the lowest for thumbnails, none for others)
    leave                             ->
                                      <-     error {code, message}  (then close on auth errors)
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Join(_Message):
    """First message: the token signaling handed out for this room."""

    type: Literal["join"] = "join"
    token: str = Field(max_length=4096)


class Offer(_Message):
    """An SDP offer (initial or renegotiation).

    ``screen`` names the offer's sending video m-lines (by mid) that carry a screen share
    rather than a camera: subscribers see them as ``source: "screen"`` in ``streams``. A
    sending m-line the next offer no longer sends on (``inactive``) is unpublished: its
    slot at every subscriber is freed (they are asked to renegotiate).
    """

    type: Literal["offer"] = "offer"
    sdp: str = Field(max_length=200_000)
    screen: list[str] = Field(default_factory=list, max_length=4)


class Layout(_Message):
    """Participants whose tiles this client shows.

    ``visible`` tiles get high simulcast layers. With ``thumbnails`` (even empty), the
    client also says which tiles it shows small (they get the lowest layer) and that it
    shows nobody else: their video is not forwarded to it until a later layout shows
    them (then it resumes on a keyframe). Without ``thumbnails``, everyone not visible
    gets the lowest layer.
    """

    type: Literal["layout"] = "layout"
    visible: list[str] = Field(default_factory=list, max_length=64)
    thumbnails: list[str] | None = Field(default=None, max_length=64)


class Leave(_Message):
    """Leave the room; the SFU closes the WebSocket."""

    type: Literal["leave"] = "leave"


class CascadeHello(_Message):
    """First message of a node-to-node link (another SFU node of the fleet, not a
    client): its signed hello (:mod:`visavis.sfu.cascade`)."""

    type: Literal["cascade"] = "cascade"
    token: str = Field(max_length=4096)


ClientMessage = Annotated[Join | Offer | Layout | Leave | CascadeHello, Field(discriminator="type")]
client_message_adapter: TypeAdapter[Join | Offer | Layout | Leave | CascadeHello] = TypeAdapter(
    ClientMessage
)


class ParticipantInfo(_Message):
    participant_id: str
    user: str
    device: str


class StreamInfo(_Message):
    """What a receive slot (m-line) of the client carries."""

    mid: str
    participant_id: str
    user: str
    kind: Literal["audio", "video"]
    source: Literal["microphone", "camera", "screen"] = Field(
        description="what the publisher captures: a screen share is its own track, beside "
        "the camera"
    )


class Joined(_Message):
    type: Literal["joined"] = "joined"
    room_id: str
    participant_id: str
    participants: list[ParticipantInfo]
    audio: int = Field(description="remote audio tracks available now (receive slots to offer)")
    video: int = Field(description="remote video tracks available now")
    video_codec: Literal["vp8", "vp9", "h264", "av1"] = Field(
        default="vp8",
        description="the room's one video codec: offer it (an offer without it is refused"
        " with `unsupported_codec`)",
    )


class Answer(_Message):
    type: Literal["answer"] = "answer"
    sdp: str
    streams: list[StreamInfo]


class Renegotiate(_Message):
    """Offer again, with this many more recvonly transceivers of each kind."""

    type: Literal["renegotiate"] = "renegotiate"
    audio: int = 0
    video: int = 0


class ParticipantJoined(_Message):
    type: Literal["participant_joined"] = "participant_joined"
    participant: ParticipantInfo


class ParticipantLeft(_Message):
    type: Literal["participant_left"] = "participant_left"
    participant_id: str
    reason: Literal["left", "timeout", "replaced"] = "left"


class DominantSpeaker(_Message):
    type: Literal["dominant_speaker"] = "dominant_speaker"
    participant_id: str


class Error(_Message):
    type: Literal["error"] = "error"
    code: str
    message: str


ServerMessage = Annotated[
    Joined | Answer | Renegotiate | ParticipantJoined | ParticipantLeft | DominantSpeaker | Error,
    Field(discriminator="type"),
]
server_message_adapter: TypeAdapter[
    Joined | Answer | Renegotiate | ParticipantJoined | ParticipantLeft | DominantSpeaker | Error
] = TypeAdapter(ServerMessage)
