"""Join an SFU room from Python (aiortc underneath): publish, receive, follow the room.

    session = SfuSession(join["url"], join["token"], audio=mic, video=camera)
    await session.join()
    ...                                    # session.frames, session.dominant_speaker
    await session.close()

``join`` is the ``{"room_id", "url", "token"}`` signaling hands out for a group call.
The session follows the SFU control protocol (:mod:`visavis.sfu.messages`): it always
offers, publishes with sendonly transceivers and receives on recvonly ones, adding more
when the SFU asks (``renegotiate``). Every received track is read (and so decoded by
aiortc); decoded frames are counted per remote participant and kind.

Rooms can move: when the SFU node a room is on dies or drains, signaling sends every
device in the call ``call.room_moved`` with a token for the new node. :meth:`move` leaves
the old node and joins the new one with the same tracks; :meth:`follow` does that by
itself for every move signaling announces on a :class:`~visavis.client.session.Session`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import math
import struct
import time
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, VideoFrame
from websockets.asyncio.client import ClientConnection, connect

from visavis.e2ee.ratchet import Keyring
from visavis.e2ee.rtc import decrypt_receiver, encrypt_sender
from visavis.signaling import messages as m

if TYPE_CHECKING:
    from visavis.client.session import Session


class SfuSessionError(Exception):
    """The SFU refused the session (``code`` as in its error message)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class SfuSession:
    """One participant in an SFU room."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        audio: MediaStreamTrack | None = None,
        video: MediaStreamTrack | None = None,
        ice_servers: list[RTCIceServer] | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self.audio = audio
        self.video = video
        self.ice_servers = ice_servers or []
        self.keyring = keyring  # end-to-end encryption (SFrame) of every frame when set
        self.video_codec = "vp8"  # the room's (from joined): the only video codec offered
        self.participant_id: str | None = None
        self.room_id: str | None = None
        self.participants: dict[str, dict[str, Any]] = {}
        self.streams: dict[str, dict[str, Any]] = {}  # mid -> stream info
        self.dominant_speaker: str | None = None
        self.events: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.frames: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.last_frame: dict[str, dict[str, float]] = defaultdict(dict)
        self.first_frame: dict[str, dict[str, float]] = defaultdict(dict)
        self.video_size: dict[str, tuple[int, int]] = {}  # participant -> last decoded w, h
        # Called with the participant id when one leaves the room for good (reason "left",
        # not a timeout): a call link's guest learns of leavers only here.
        self.on_participant_left: Callable[[str], None] | None = None
        # Called when the control connection to the SFU drops under a joined session (its
        # node died, or it was cut off): a call link's guest rejoins from here.
        self.on_lost: Callable[[], None] | None = None
        self.negotiations = 0
        self.moves = 0
        self.moved_at: float | None = None
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._follower: asyncio.Task[None] | None = None
        self._signaling: tuple[Session, str] | None = None  # (session, call) to report to
        self._leaving = False
        self._moving = asyncio.Lock()
        self._changed = asyncio.Event()
        self._fresh()

    def _fresh(self) -> None:
        """A new peer connection and room state (first join, and every move)."""
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=self.ice_servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.pc.on("track", self._on_track)
        self.participants = {}
        self.streams = {}
        self._answer: asyncio.Future[dict[str, Any]] | None = None
        self._wanted: tuple[int, int] | None = None  # slots the SFU asked for, not yet offered
        self._in_flight = False  # slots added for an offer whose answer is not applied yet
        self._negotiator: asyncio.Task[None] | None = None
        self._joined: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    # -- lifecycle ----------------------------------------------------------------------
    async def join(self, limit: float = 10.0) -> None:
        """Connect, join with the token, publish and receive what the room has."""
        self._ws = await connect(self.url, max_size=1 << 20)
        await self._ws.send(json.dumps({"type": "join", "token": self.token}))
        self._reader = asyncio.create_task(self._read())
        joined = await asyncio.wait_for(self._joined, limit)
        self.participant_id = joined["participant_id"]
        self.video_codec = joined.get("video_codec", "vp8")  # the room's one video codec
        self.room_id = joined["room_id"]
        for info in joined["participants"]:
            self.participants[info["participant_id"]] = info
        for track in (self.audio, self.video):
            if track is not None:
                self._e2ee(self.pc.addTransceiver(track, direction="sendonly"))
        self._request(joined["audio"], joined["video"])
        assert self._negotiator is not None
        await asyncio.wait_for(self._negotiator, limit)

    async def close(self) -> None:
        """Leave the room and stop everything."""
        if self._follower is not None:
            self._follower.cancel()
        await self._leave()

    async def _leave(self) -> None:
        self._leaving = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.send(json.dumps({"type": "leave"}))
                await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
        for task in list(self._tasks):
            task.cancel()
        await self.pc.close()

    async def move(self, url: str, token: str, limit: float = 10.0) -> None:
        """Leave this room's node and join the room on ``url`` with ``token`` (the same
        tracks, a new peer connection). Frame counters carry on."""
        async with self._moving:
            await self._leave()
            self.url, self.token = url, token
            self._fresh()
            self._leaving = False
            self.moves += 1
            self.moved_at = time.monotonic()
            await self.join(limit)

    def follow(self, session: Session, call_id: str) -> None:
        """Rejoin by itself whenever signaling moves this call's room (``call.room_moved``
        on ``session``), until :meth:`close`."""
        self._signaling = (session, call_id)
        self._follower = asyncio.create_task(self._follow(session, call_id))

    async def _follow(self, session: Session, call_id: str) -> None:
        async with session.events() as events:
            async for event in events:
                if isinstance(event, m.CallRoomMoved) and event.call_id == call_id:
                    try:
                        await self.move(event.url, event.token)
                    except Exception as exc:  # the next move (or the caller) decides
                        self.errors.append({"code": "move_failed", "message": str(exc)})

    async def set_layout(self, visible: list[str], thumbnails: list[str] | None = None) -> None:
        """Tell the SFU which participants' tiles are shown (they get high layers); with
        ``thumbnails`` (even empty) also which are shown small (the lowest layer) and that
        nobody else is shown (their video pauses until a later layout shows them)."""
        assert self._ws is not None
        layout: dict[str, Any] = {"type": "layout", "visible": visible}
        if thumbnails is not None:
            layout["thumbnails"] = thumbnails
        await self._ws.send(json.dumps(layout))

    async def wait_for(self, predicate: Any, limit: float) -> None:
        """Wait until ``predicate()`` is true (re-checked on every event and frame)."""
        deadline = time.monotonic() + limit
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("condition not reached")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.2))

    # -- negotiation --------------------------------------------------------------------
    def _request(self, audio: int, video: int) -> None:
        """The SFU wants ``audio``/``video`` more receive slots than it saw in our last
        answered offer. Requests are counts against that offer, not increments: a
        later one replaces an earlier one not yet offered, and one arriving while an
        offer is under way is dropped (the SFU answers that offer with the room as it
        is then and asks again after it if slots are still missing). Adding them up
        grew a client to 26-32 m-lines after a room move."""
        if self._in_flight:
            return
        self._wanted = (audio, video)
        if self._negotiator is None or self._negotiator.done():
            self._negotiator = asyncio.create_task(self._negotiate_wanted())
            self._tasks.add(self._negotiator)
            self._negotiator.add_done_callback(self._tasks.discard)
            self._negotiator.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _negotiate_wanted(self) -> None:
        while self._wanted is not None:
            audio, video = self._wanted
            self._wanted = None
            await self._negotiate(audio, video)

    async def _negotiate(self, audio: int, video: int) -> None:
        self._in_flight = True
        try:
            for kind, count in (("audio", audio), ("video", video)):
                for _ in range(count):
                    self._e2ee(self.pc.addTransceiver(kind, direction="recvonly"))
            await self.pc.setLocalDescription(await self.pc.createOffer())
            self._answer = asyncio.get_running_loop().create_future()
            assert self._ws is not None
            await self._ws.send(json.dumps({"type": "offer", "sdp": self.pc.localDescription.sdp}))
            answer = await self._answer
            self.streams = {s["mid"]: s for s in answer["streams"]}
            await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        finally:
            self._in_flight = False
        self.negotiations += 1
        self._changed.set()

    def _e2ee(self, transceiver: RTCRtpTransceiver) -> None:
        """Offer only the room's video codec (aiortc: VP8 or H.264) on a new
        transceiver, and attach SFrame to it when end-to-end encryption is on."""
        if transceiver.kind == "video":
            mime = f"video/{self.video_codec}"
            caps = RTCRtpSender.getCapabilities("video").codecs
            wanted = [c for c in caps if c.mimeType.lower() in (mime, "video/rtx")]
            if len(wanted) > 1:
                transceiver.setCodecPreferences(wanted)
        if self.keyring is None:
            return
        if transceiver.direction == "sendonly":
            encrypt_sender(transceiver.sender, self.keyring)
        else:
            decrypt_receiver(transceiver.receiver, self.keyring, transceiver.kind)

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                self._on_message(json.loads(raw))
        except Exception:  # connection lost: the session simply ends
            pass
        finally:
            if not self._leaving and self._signaling is not None:
                # The SFU went away under us: tell signaling (enough such reports move the
                # room before the node's registry record expires).
                session, call_id = self._signaling
                self._spawn(self._report_lost(session, call_id, self.url))
            if not self._leaving and self._joined.done() and self.on_lost is not None:
                self.on_lost()
            if not self._joined.done():
                self._joined.set_exception(SfuSessionError("closed", "connection closed"))
            if self._answer is not None and not self._answer.done():
                self._answer.set_exception(SfuSessionError("closed", "connection closed"))

    @staticmethod
    async def _report_lost(session: Session, call_id: str, url: str) -> None:
        with contextlib.suppress(Exception):  # best effort: the registry TTL is the backstop
            await session.request("call.media_lost", call_id=call_id, url=url)

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        self.events.append(message)
        if kind == "joined":
            self._joined.set_result(message)
        elif kind == "answer" and self._answer is not None and not self._answer.done():
            self._in_flight = False  # what the SFU sends from now on counts this offer
            self._answer.set_result(message)
        elif kind == "renegotiate":
            self._request(message["audio"], message["video"])
        elif kind == "participant_joined":
            info = message["participant"]
            self.participants[info["participant_id"]] = info
        elif kind == "participant_left":
            self.participants.pop(message["participant_id"], None)
            if message.get("reason", "left") == "left" and self.on_participant_left is not None:
                self.on_participant_left(message["participant_id"])
        elif kind == "dominant_speaker":
            self.dominant_speaker = message["participant_id"]
        elif kind == "error":
            self.errors.append(message)
            error = SfuSessionError(message["code"], message["message"])
            if not self._joined.done():
                self._joined.set_exception(error)
            elif self._answer is not None and not self._answer.done():
                self._answer.set_exception(error)
        self._changed.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # A renegotiation cut short by the connection closing (a move, a dead node) is
        # not an error anyone waits for: retrieve it so asyncio does not log it.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    # -- receiving ----------------------------------------------------------------------
    def _on_track(self, track: MediaStreamTrack) -> None:
        transceiver = next(
            (t for t in self.pc.getTransceivers() if t.receiver.track is track), None
        )
        if transceiver is not None:
            self._spawn(self._consume(transceiver, track))

    async def _consume(self, transceiver: RTCRtpTransceiver, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            info = self.streams.get(transceiver.mid or "")
            if info is None:
                continue
            who, kind = info["participant_id"], info["kind"]
            if isinstance(frame, VideoFrame):
                self.video_size[who] = (frame.width, frame.height)
            now = time.monotonic()
            self.frames[who][kind] += 1
            self.first_frame[who].setdefault(kind, now)
            self.last_frame[who][kind] = now
            self._changed.set()


class ToneTrack(MediaStreamTrack):
    """Audio source: a sine tone (``amplitude`` 0..1; 0 is silence), 20 ms mono frames."""

    kind = "audio"

    def __init__(self, amplitude: float = 0.5, frequency: float = 440.0) -> None:
        super().__init__()
        self.amplitude = amplitude
        self.frequency = frequency
        self._samples = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        rate, count = 48000, 960
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._samples / rate - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        step = 2 * math.pi * self.frequency / rate
        scale = self.amplitude * 32767
        data = struct.pack(
            f"<{count}h", *(int(scale * math.sin(step * (self._samples + i))) for i in range(count))
        )
        frame = AudioFrame(format="s16", layout="mono", samples=count)
        frame.planes[0].update(data)
        frame.sample_rate = rate
        frame.pts = self._samples
        frame.time_base = fractions.Fraction(1, rate)
        self._samples += count
        return frame


class PatternTrack(MediaStreamTrack):
    """Video source: a small moving pattern (default 160x120 at 15 fps) for tests and bots."""

    kind = "video"

    def __init__(self, width: int = 160, height: int = 120, fps: int = 15, seed: int = 0) -> None:
        super().__init__()
        self.width, self.height, self.fps, self.seed = width, height, fps, seed
        self._count = 0
        self._start: float | None = None

    async def recv(self) -> VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._count / self.fps - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        w, h = self.width, self.height
        x = (self._count * 4) % w
        row = bytes([40] * x + [235] * min(16, w - x) + [40] * max(0, w - x - 16))
        frame = VideoFrame(w, h, "yuv420p")
        frame.planes[0].update(row * h)
        chroma = (w // 2) * (h // 2)
        frame.planes[1].update(bytes([(self.seed * 60) % 256]) * chroma)
        frame.planes[2].update(bytes([128]) * chroma)
        frame.pts = self._count * (90000 // self.fps)
        frame.time_base = fractions.Fraction(1, 90000)
        self._count += 1
        return frame
