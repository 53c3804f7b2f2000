"""One 1:1 call on this device: an aiortc peer connection driven by signaling.

Theory of operation (docs/protocol.md, "A 1:1 call"). The caller's device invites, then
prepares its offer while the callee's devices ring (peer connection, tracks, ICE
gathering), and sends it as soon as ``call.participant{joined}`` names the answering
device. The callee answers, waits for the offer and replies. Both sides trickle: the
description goes out without its candidates, then each candidate as
``call.signal{candidate}``, then an empty candidate for end-of-candidates (aiortc gathers
everything before a description exists, so trickling costs nothing and matches what
browsers send). Incoming signals are applied one at a time, in order.

States: ``ringing`` → ``connecting`` (answered, negotiating) → ``connected`` (ICE and
DTLS up) → ``ended`` (someone hung up) or ``failed`` (with a :data:`FAILURE_REASONS`
reason). A malformed description or candidate from the peer, no media path within
``setup_timeout`` or ICE failure fail the call: the device leaves it, so the peer's device
sees ``call.ended`` and fails too, and both can place the next call at once.

ICE restart: aiortc cannot restart ICE inside a peer connection, so :meth:`Call.restart_ice`
renegotiates the call on a fresh peer connection (new ICE credentials, new candidates);
the other side replaces its peer connection when the new offer arrives. Either side does
this by itself when the path breaks after having worked: ICE ``failed``, or no packet at
all from the peer for ``Session(media_timeout=3)`` seconds (a network change: aioice's
consent checks would take ~30 s to notice, and it accepts media from any address, so
often only one side stops receiving). If both offer at once, the caller's offer wins (the
callee drops its own and answers, as the "polite" peer of WebRTC's perfect negotiation).
Descriptions and candidates that could not be sent because the device connection dropped
(the same network change usually kills it) are sent again once it is back; duplicates
(same ICE ufrag) and candidates of a superseded description are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceCandidate,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRecorder, MediaRelay
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.sdp import candidate_from_sdp
from av import AudioFrame, VideoFrame

from visavis.client.e2ee import DirectE2ee
from visavis.client.errors import CallFailed, ClientError, NotConnected, RequestError
from visavis.client.ice import host_addresses, set_relay_grace
from visavis.client.latency import (
    ReceiveProbe,
    SendProbe,
    StageTimes,
    now_ms,
    probe_receivers,
    tune_receivers,
)
from visavis.client.media import MediaSource, TestPatternTrack, latency_ms, read_stamp
from visavis.client.stats import CallStats, MediaCounters, Path, RateMeter, median
from visavis.e2ee.identity import Pins
from visavis.signaling import messages as m

if TYPE_CHECKING:
    from visavis.client.session import Session

log = logging.getLogger("visavis.client")

FAILURE_REASONS: dict[str, str] = {
    "declined": "the callee declined",
    "no_answer": "nobody answered before the ring timeout",
    "cancelled": "the caller gave up before anyone answered",
    "peer_left": "the other side hung up before media flowed",
    "bad_sdp": "the peer sent a session description that cannot be used",
    "bad_candidate": "the peer sent a malformed ICE candidate",
    "setup_timeout": "no media path was found within the setup timeout",
    "ice_failed": "no ICE candidate pair works (is TURN reachable?)",
    "media_lost": "the media path broke and could not be restored",
    "signaling_error": "signaling refused a message of this call",
    "local_error": "this device could not set up media",
    "e2ee": "the other device's identity or DTLS fingerprint did not check out (docs/e2ee.md)",
}
RESTART_LIMIT = 3
SEND_ATTEMPTS = 4
E2EE_DRAIN = 5.0  # seconds a peer's leave waits for its earlier key messages (an alert)
PEER_GONE_CODES = frozenset({"no_peer", "not_in_call", "call_ended", "call_not_found"})

CallState = Literal["ringing", "connecting", "connected", "reconnecting", "ended", "failed"]
FrameCallback = Callable[[str, VideoFrame | AudioFrame], Any]


@dataclass(frozen=True)
class CallStateChanged:
    """Published on the session's event streams whenever a call changes state."""

    call: Call
    state: CallState
    reason: str | None


def strip_candidates(sdp: str) -> tuple[str, list[str]]:
    """Split an SDP into the description without candidates and the candidate lines."""
    keep: list[str] = []
    candidates: list[str] = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            candidates.append(line[2:])
        elif line != "a=end-of-candidates":
            keep.append(line)
    return "\r\n".join(keep) + "\r\n", candidates


def ice_ufrag(sdp: str | None) -> str | None:
    """The first ``a=ice-ufrag`` of an SDP (which peer connection it describes)."""
    for line in (sdp or "").splitlines():
        if line.startswith("a=ice-ufrag:"):
            return line[len("a=ice-ufrag:"):].strip()
    return None


def rx_packets(pc: RTCPeerConnection) -> int:
    """Packets (DTLS, SRTP, SRTCP) received so far on ``pc``'s transports."""
    total = 0
    seen: set[int] = set()
    for transceiver in pc.getTransceivers():
        transport = getattr(transceiver.receiver, "transport", None)
        if transport is None or id(transport) in seen:
            continue
        seen.add(id(transport))
        total += int(getattr(transport, "_RTCDtlsTransport__rx_packets", 0))
    return total


def parse_candidate(value: m.IceCandidate) -> RTCIceCandidate | None:
    """An aiortc candidate from a trickled one; None for end-of-candidates.

    :raises ValueError: the candidate line is malformed.
    """
    text = value.candidate.strip()
    if not text:
        return None
    if text.startswith("a="):
        text = text[2:]
    text = text.removeprefix("candidate:")
    try:
        candidate = candidate_from_sdp(text)
    except Exception as exc:  # aiortc asserts, indexes and int()s its way through
        raise ValueError(f"malformed candidate {value.candidate[:80]!r}") from exc
    if candidate.port <= 0 or candidate.port > 65535 or not candidate.ip:
        raise ValueError(f"candidate with an impossible address {value.candidate[:80]!r}")
    if candidate.type not in ("host", "srflx", "prflx", "relay"):
        raise ValueError(f"candidate of unknown type {candidate.type!r}")
    if candidate.protocol.lower() not in ("udp", "tcp"):
        raise ValueError(f"candidate with unknown transport {candidate.protocol!r}")
    if value.sdpMid is None and value.sdpMLineIndex is None:
        candidate.sdpMLineIndex = 0
    candidate.sdpMid = value.sdpMid
    candidate.sdpMLineIndex = value.sdpMLineIndex
    return candidate


class Call:
    """A 1:1 call; made by :meth:`Session.call` or :meth:`Session.answer`, never directly."""

    def __init__(
        self,
        session: Session,
        call_id: str,
        direction: Literal["outgoing", "incoming"],
        peer: str,
        *,
        media: str = "video",
        source: MediaSource | None = None,
        record: str | None = None,
        on_frame: FrameCallback | None = None,
        setup_timeout: float = 20.0,
    ) -> None:
        self.session = session
        self.id = call_id
        self.direction = direction
        self.peer = peer
        self.media_kind = media
        self.source = source or MediaSource.none()
        self.record_path = record
        self.on_frame = on_frame
        self.setup_timeout = setup_timeout
        self.state: CallState = "ringing"
        self.reason: str | None = None
        self.detail = ""
        self.remote_device: str | None = None
        self.path: Path | None = None
        self.received = MediaCounters()
        self.started_at = time.time()
        self.answered_at: float | None = None
        self.connected_at: float | None = None
        self.restarts = 0
        self.media_timeouts = 0
        self._pc: RTCPeerConnection | None = None
        self._signals: asyncio.Queue[m.CallSignalEvent] = asyncio.Queue()
        # Key messages, handled one at a time in arrival order (an alert after the
        # announce that makes its signature checkable) by one task started on the first.
        self._e2ee_events: asyncio.Queue[m.CallE2eeEvent] = asyncio.Queue()
        self._e2ee_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._readers: list[asyncio.Task[None]] = []
        self._offer_ready: asyncio.Task[RTCPeerConnection] | None = None
        self._connected = asyncio.Event()
        self._done = asyncio.Event()
        self._recorder: MediaRecorder | None = None
        self._relay: MediaRelay | None = None
        self._out_relay: MediaRelay | None = None
        self._meter_in = RateMeter()
        self._meter_out = RateMeter()
        self._setup_timer: asyncio.TimerHandle | None = None
        self._closing = False
        self.stage_times = StageTimes()
        self.last_media_at: float | None = None  # monotonic time of the last decoded frame
        self._probes: dict[Any, ReceiveProbe] = {}
        self._seen_candidates: set[str] = set()
        # End-to-end checks when the session has an identity (client/e2ee.py enable_e2ee).
        self.e2ee: DirectE2ee | None = None
        if session.identity is not None:
            self.e2ee = DirectE2ee(self, session.identity, session.pins or Pins())

    def __repr__(self) -> str:
        return f"<Call {self.id} {self.direction} {self.peer} {self.state}>"

    # ------------------------------------------------------------------ public API
    @property
    def ended(self) -> bool:
        return self.state in ("ended", "failed")

    async def wait_connected(self, within: float | None = None) -> None:
        """Wait until media can flow.

        :raises CallFailed: the call failed or ended first (``reason`` says why).
        :raises TimeoutError: ``timeout`` passed first (the call goes on).
        """
        connected = asyncio.ensure_future(self._connected.wait())
        done = asyncio.ensure_future(self._done.wait())
        try:
            finished, _ = await asyncio.wait(
                {connected, done}, timeout=within, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            connected.cancel()
            done.cancel()
        if self.state == "connected" or (self._connected.is_set() and not self.ended):
            return
        if self.ended:
            raise CallFailed(self.reason or "ended", self.detail)
        if not finished:
            raise TimeoutError(f"call {self.id} not connected within {within} s")

    async def wait_ended(self, within: float | None = None) -> str:
        """Wait for the end of the call; returns the reason."""
        await asyncio.wait_for(self._done.wait(), within)
        return self.reason or "ended"

    async def wait_frames(self, video: int = 1, within: float = 10.0) -> None:
        """Wait until ``video`` frames were decoded from the peer."""
        deadline = time.monotonic() + within
        while self.received.video_frames < video:
            if self.ended:
                raise CallFailed(self.reason or "ended", self.detail)
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.received.video_frames} of {video} video frames in {within} s"
                )
            await asyncio.sleep(0.02)

    async def hangup(self) -> None:
        """End the call: cancel it while it rings (caller), leave it otherwise."""
        if self.ended or self._closing:
            return
        verb = "call.cancel" if self.direction == "outgoing" and self.state == "ringing" else (
            "call.leave"
        )
        self._closing = True  # our own hang-up: the events it causes are not news
        with contextlib.suppress(ClientError):
            await self.session.request(verb, call_id=self.id)
        await self._finish("ended", "hangup", "")

    async def restart_ice(self) -> None:
        """Renegotiate on a fresh peer connection (new ICE credentials and candidates).

        Either side may; if both offer at once, the caller's offer wins.
        """
        if self.ended or self.remote_device is None or self._pc is None:
            return
        self.restarts += 1
        self._set_state("reconnecting")
        self._arm_setup_timer()
        pc = await self._new_pc(offering=True)
        await self._send_offer(pc)

    async def _path_lost(self, detail: str) -> None:
        if self.ended:
            return
        if self.restarts >= RESTART_LIMIT:
            await self._fail("media_lost", f"{detail}; path lost after {self.restarts} restarts")
            return
        log.info("call %s: %s: restarting ICE", self.id, detail)
        await self.restart_ice()

    async def _watch_media(self) -> None:
        """Restart ICE when a connected call receives nothing from the peer for a while.

        Armed only when packets are due: we send media (the peer's receiver reports on it
        over RTCP at least every 1.5 s) or we have received media.
        """
        timeout = self.session.media_timeout
        if timeout <= 0:
            return
        watched: RTCPeerConnection | None = None
        last_count, last_change = -1, 0.0
        while not self.ended:
            await asyncio.sleep(min(0.5, timeout / 4))
            pc = self._pc
            if pc is None or self.state != "connected" or pc.connectionState != "connected":
                watched = None
                continue
            count, now = rx_packets(pc), time.monotonic()
            if pc is not watched or count != last_count:
                watched, last_count, last_change = pc, count, now
                continue
            sending = self.source.audio is not None or self.source.video is not None
            if now - last_change < timeout or not (sending or self.last_media_at is not None):
                continue
            watched = None
            self.media_timeouts += 1
            await self._path_lost(f"no packet from the peer for {now - last_change:.1f} s")

    async def stats(self) -> CallStats:
        """Live figures: path, RTT, bitrates, loss, frames decoded, resolution, latency."""
        rtt: float | None = None
        lost = received = 0
        bytes_in = bytes_out = 0
        pc = self._pc
        if pc is not None:
            with contextlib.suppress(Exception):
                report = await pc.getStats()
                for item in report.values():
                    kind = type(item).__name__
                    if kind == "RTCRemoteInboundRtpStreamStats":
                        value = getattr(item, "roundTripTime", None)
                        if value:
                            rtt = max(rtt or 0.0, float(value) * 1000)
                    elif kind == "RTCInboundRtpStreamStats":
                        lost += max(0, int(getattr(item, "packetsLost", 0)))
                        received += int(getattr(item, "packetsReceived", 0))
                    elif kind == "RTCTransportStats":
                        bytes_in += int(getattr(item, "bytesReceived", 0))
                        bytes_out += int(getattr(item, "bytesSent", 0))
            if self.path is None and self.state == "connected":
                self.path = self._read_path()
        now = time.monotonic()
        lat = self.received.latencies_ms[-50:]
        return CallStats(
            state=self.state,
            path=self.path,
            rtt_ms=rtt,
            bitrate_in_bps=self._meter_in.sample(bytes_in, now),
            bitrate_out_bps=self._meter_out.sample(bytes_out, now),
            packets_lost=lost,
            packets_received=received,
            frames_decoded=self.received.video_frames,
            audio_frames=self.received.audio_frames,
            width=self.received.width,
            height=self.received.height,
            latency_ms=median(lat),
        )

    # ------------------------------------------------------------------ from the session
    def _on_event(self, event: m.ServerEvent) -> None:
        if self.ended or self._closing:
            return
        if isinstance(event, m.CallSignalEvent):
            if self.remote_device is None:
                self.remote_device = event.from_device
            if event.from_device == self.remote_device:
                self._signals.put_nowait(event)
        elif isinstance(event, m.CallParticipant):
            if (
                self.direction == "outgoing"
                and event.state == "joined"
                and event.user.handle != self.session.handle
                and event.device_id
            ):
                self._answered(event.device_id)
            elif event.state == "handoff" and event.device_id:
                self.remote_device = event.device_id  # the peer moved: renegotiate there
                if self.direction == "outgoing":
                    self._spawn(self.restart_ice())
        elif isinstance(event, m.CallEnded):
            self._spawn(self._remote_end(event.reason))
        elif isinstance(event, m.CallE2eeEvent) and self.e2ee is not None:
            self._e2ee_events.put_nowait(event)
            if self._e2ee_task is None:
                self._e2ee_task = self._spawn(self._process_e2ee())

    def _device_reconnected(self) -> None:
        pc = self._pc
        if (
            self.state == "connected"  # "reconnecting": a renegotiation is under way already
            and pc is not None
            and pc.connectionState != "connected"
            and self.restarts < RESTART_LIMIT
        ):
            self._spawn(self.restart_ice())

    async def _process_e2ee(self) -> None:
        assert self.e2ee is not None
        while not self.ended:
            event = await self._e2ee_events.get()
            try:
                await self.e2ee.on_message(event)
            except Exception:  # one bad message never ends the call; the setup timer does
                log.exception("call %s: key message from %s failed", self.id, event.from_device)
            finally:
                self._e2ee_events.task_done()
            alerts = self.e2ee.keys.alerts
            if any(a.reason in ("peer_alert", "announce_signature") for a in alerts):
                await self._fail("e2ee", self.e2ee.failed())
                return

    async def _e2ee_stop(self) -> str:
        """The peer is gone: handle the key messages it sent before leaving (its signed
        alert travels ahead of its leave), then say whether an end-to-end check stopped
        the call ("" if not), so that a security stop is never reported as a hang-up."""
        if self.e2ee is None:
            return ""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._e2ee_events.join(), E2EE_DRAIN)
        return self.e2ee.failed()

    def _start_outgoing(self) -> None:
        if self.e2ee is not None:
            self._spawn(self.e2ee.start())
        self._offer_ready = self._spawn(self._prepare_offer())
        self._spawn(self._process_signals())
        self._spawn(self._watch_media())

    def _start_incoming(self) -> None:
        if self.e2ee is not None:
            self._spawn(self.e2ee.start())
        self.answered_at = time.time()
        self._set_state("connecting")
        self._arm_setup_timer()
        self._spawn(self._process_signals())
        self._spawn(self._watch_media())

    def _answered(self, device_id: str) -> None:
        if self.remote_device is not None:
            return
        self.remote_device = device_id
        self.answered_at = time.time()
        self._set_state("connecting")
        self._arm_setup_timer()
        self._spawn(self._offer_when_ready())

    # ------------------------------------------------------------------ negotiation
    def _configuration(self) -> RTCConfiguration:
        policy = (
            RTCIceTransportPolicy.RELAY
            if self.session.ice_transport_policy == "relay"
            else RTCIceTransportPolicy.ALL
        )
        return RTCConfiguration(
            iceServers=self.session.rtc_ice_servers(),
            iceTransportPolicy=policy,
            bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
        )

    async def _new_pc(self, offering: bool) -> RTCPeerConnection:
        old = self._pc
        pc = RTCPeerConnection(self._configuration())
        if self.e2ee is not None:
            self.e2ee.prepare(pc)
        self._pc = pc
        self.path = None
        self._connected.clear()
        self._probes = {}
        self._seen_candidates = set()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._on_track(pc, track)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            self._spawn(self._pc_state(pc))

        if offering:
            kinds = ["audio", "video"] if self.media_kind == "video" else ["audio"]
            for kind in kinds:
                track = getattr(self.source, kind)
                if track is not None:
                    self._add_track(pc, track)
                else:
                    pc.addTransceiver(kind, direction="recvonly")
        if old is not None:
            # In the background: closing a connection whose path is dead can take seconds
            # (DTLS close, TURN deallocation retransmitted into the void).
            self._spawn(self._close_pc(old))
        return pc

    def _tune_ice(self, pc: RTCPeerConnection) -> None:
        if self.session.marker_jitter_buffer:
            tune_receivers(pc)  # before any packet arrives: see visavis.client.latency
        for receiver, probe in probe_receivers(pc, self.stage_times, skip=self._probes).items():
            self._probes[receiver] = probe
        grace = self.session.relay_grace
        for transceiver in pc.getTransceivers():
            with contextlib.suppress(AttributeError):
                connection = transceiver.sender.transport.transport.iceGatherer._connection
                set_relay_grace(connection, grace)

    def _add_track(self, pc: RTCPeerConnection, track: MediaStreamTrack) -> None:
        outgoing = self._outgoing(track)
        if isinstance(track, TestPatternTrack):
            outgoing = SendProbe(outgoing, self.stage_times)  # times queueing and encoding
        sender = pc.addTrack(outgoing)
        if isinstance(outgoing, SendProbe):
            outgoing.sender = sender

    def latency_stages(self) -> dict[str, float]:
        """Median milliseconds per pipeline stage of stamped video frames (both directions
        as seen from this device: ``queue``/``encode`` of what we send, the rest of what we
        receive); see :mod:`visavis.client.latency`."""
        return self.stage_times.medians()

    def _outgoing(self, track: MediaStreamTrack) -> MediaStreamTrack:
        """A proxy of a source track for one peer connection.

        aiortc stops the track a sender was given when that sender stops; a renegotiation
        (ICE restart) closes the old peer connection, so each one gets its own proxy.
        """
        if self._out_relay is None:
            self._out_relay = MediaRelay()
        return self._out_relay.subscribe(track, buffered=False)

    async def _prepare_offer(self) -> RTCPeerConnection:
        pc = await self._new_pc(offering=True)
        self._tune_ice(pc)
        with host_addresses(self.session.host_addresses):
            await pc.setLocalDescription(await pc.createOffer())
        return pc

    async def _offer_when_ready(self) -> None:
        assert self._offer_ready is not None
        try:
            pc = await self._offer_ready
        except Exception as exc:
            await self._fail("local_error", f"cannot prepare the offer: {exc}")
            return
        await self._send_description(pc)

    async def _send_offer(self, pc: RTCPeerConnection) -> None:
        self._tune_ice(pc)
        try:
            with host_addresses(self.session.host_addresses):
                await pc.setLocalDescription(await pc.createOffer())
        except Exception as exc:
            await self._fail("local_error", f"cannot create an offer: {exc}")
            return
        await self._send_description(pc)

    async def _send_description(self, pc: RTCPeerConnection) -> None:
        local = pc.localDescription
        sdp, candidates = strip_candidates(local.sdp)
        mid = next(
            (t.mid for t in pc.getTransceivers() if t.mid is not None), "0"
        )
        ufrag = ice_ufrag(sdp)

        async def send_all() -> None:
            await self.session.send_signal(self.id, description={"type": local.type, "sdp": sdp})
            for line in [*candidates, ""]:
                await self.session.send_signal(
                    self.id,
                    candidate={"candidate": line, "sdpMid": mid, "sdpMLineIndex": 0,
                               "usernameFragment": ufrag},
                )

        try:
            for attempt in range(SEND_ATTEMPTS):
                try:
                    await send_all()
                    return
                except NotConnected:
                    # The device connection dropped (often the same network change that
                    # broke the media path): send everything again once it is back.
                    if attempt == SEND_ATTEMPTS - 1 or not await self._signaling_back():
                        raise
                    if self.ended or pc is not self._pc:
                        return
        except RequestError as exc:
            if exc.code in PEER_GONE_CODES:
                await asyncio.sleep(0.5)  # let the call.ended that caused it arrive first
                warning = await self._e2ee_stop()
                if not self.ended:
                    await self._fail(*(("e2ee", warning) if warning else
                                       ("peer_left", f"signaling says {exc.code}")))
            elif not self.ended:
                await self._fail("signaling_error", f"cannot send our description: {exc}")
        except ClientError as exc:
            if not self.ended:
                await self._fail("signaling_error", f"cannot send our description: {exc}")

    async def _signaling_back(self) -> bool:
        """Wait (up to the setup timeout) for a new device connection after a drop."""
        dead = self.session._ws
        deadline = time.monotonic() + self.setup_timeout
        while time.monotonic() < deadline and not self.ended:
            await asyncio.sleep(0.1)
            if self.session.connected and self.session._ws is not dead:
                return True
        return False

    async def _process_signals(self) -> None:
        while not self.ended:
            signal = await self._signals.get()
            try:
                if signal.description is not None:
                    await self._on_description(signal.description)
                elif signal.candidate is not None:
                    await self._on_candidate(signal.candidate)
            except CallFailed as exc:
                await self._fail(exc.reason, exc.detail)
                return

    async def _on_description(self, description: m.SessionDescription) -> None:
        if "m=" not in description.sdp or "a=ice-ufrag" not in description.sdp:
            raise CallFailed("bad_sdp", "the description has no media section or ICE credentials")
        pc = self._pc
        ufrag = ice_ufrag(description.sdp)
        renegotiating = self.connected_at is not None or self.restarts > 0
        current = ice_ufrag(pc.remoteDescription.sdp) if pc and pc.remoteDescription else None
        if renegotiating and ufrag is not None and ufrag == current:
            return  # sent again after a signaling drop: we have it already
        if self.e2ee is not None and not await self.e2ee.verify(
            self.remote_device, description.sdp
        ):
            await self._fail("e2ee", self.e2ee.warning)
            return
        if description.type == "answer":
            if pc is None or pc.signalingState != "have-local-offer":
                raise CallFailed("bad_sdp", "an answer arrived without an offer")
            try:
                await pc.setRemoteDescription(RTCSessionDescription(description.sdp, "answer"))
            except Exception as exc:
                raise CallFailed("bad_sdp", f"unusable answer: {exc}") from exc
            return
        if self.direction == "outgoing" and not renegotiating:
            raise CallFailed("bad_sdp", "expected an answer, got an offer")
        if pc is not None and pc.signalingState == "have-local-offer":
            if self.direction == "outgoing":
                return  # both renegotiate at once: ours wins, the callee answers it
            log.info("call %s: the caller renegotiates too: answering its offer", self.id)
        # A first offer (callee), or a renegotiation on a fresh connection (ICE restart).
        if pc is not None:
            self.restarts += 1
            self._set_state("reconnecting")
            self._arm_setup_timer()
        pc = await self._new_pc(offering=False)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(description.sdp, "offer"))
        except Exception as exc:
            raise CallFailed("bad_sdp", f"unusable offer: {exc}") from exc
        for kind in ("audio", "video"):
            track = getattr(self.source, kind)
            if track is not None and any(t.kind == kind for t in pc.getTransceivers()):
                self._add_track(pc, track)
        self._tune_ice(pc)
        try:
            with host_addresses(self.session.host_addresses):
                await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            raise CallFailed("bad_sdp", f"cannot answer this offer: {exc}") from exc
        await self._send_description(pc)

    async def _on_candidate(self, value: m.IceCandidate) -> None:
        try:
            candidate = parse_candidate(value)
        except ValueError as exc:
            raise CallFailed("bad_candidate", str(exc)) from exc
        pc = self._pc
        if value.usernameFragment and (self.connected_at is not None or self.restarts > 0):
            remote = pc.remoteDescription if pc is not None else None
            if remote is None or ice_ufrag(remote.sdp) != value.usernameFragment:
                return  # belongs to a description we dropped or replaced
            key = f"{value.usernameFragment} {value.candidate}"
            if key in self._seen_candidates:
                return  # sent again after a signaling drop
            self._seen_candidates.add(key)
        if pc is None or pc.remoteDescription is None:
            raise CallFailed("bad_candidate", "a candidate arrived before the description")
        try:
            await pc.addIceCandidate(candidate)
        except Exception as exc:
            raise CallFailed("bad_candidate", f"unusable candidate: {exc}") from exc

    # ------------------------------------------------------------------ media and state
    def _on_track(self, pc: RTCPeerConnection, track: MediaStreamTrack) -> None:
        source: MediaStreamTrack = track
        if self.record_path and self.restarts == 0:
            if self._relay is None:
                self._relay = MediaRelay()
                self._recorder = MediaRecorder(self.record_path)
            assert self._recorder is not None
            self._recorder.addTrack(self._relay.subscribe(track, buffered=False))
            source = self._relay.subscribe(track, buffered=False)
        self._readers.append(self._spawn(self._read_track(pc, source, track)))

    def _probe_of(self, track: MediaStreamTrack) -> ReceiveProbe | None:
        for receiver, probe in self._probes.items():
            if getattr(receiver, "track", None) is track:
                return probe
        return None

    async def _read_track(
        self, pc: RTCPeerConnection, track: MediaStreamTrack, remote: MediaStreamTrack
    ) -> None:
        counters = self.received
        probe: ReceiveProbe | None = None
        while pc is self._pc or self._pc is None:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            read_ms = now_ms()
            self.last_media_at = time.monotonic()
            if isinstance(frame, VideoFrame):
                counters.video_frames += 1
                counters.width, counters.height = frame.width, frame.height
                if counters.first_video_at is None:
                    counters.first_video_at = time.time()
                stamp = read_stamp(frame)
                if stamp is not None:
                    counters.note_latency(latency_ms(stamp))
                    probe = probe or self._probe_of(remote)
                    if probe is not None:
                        probe.stages(frame, stamp.sent_ms, read_ms)
                if self.on_frame is not None:
                    self.on_frame("video", frame)
            else:
                counters.audio_frames += 1
                if self.on_frame is not None and isinstance(frame, AudioFrame):
                    self.on_frame("audio", frame)

    async def _pc_state(self, pc: RTCPeerConnection) -> None:
        if pc is not self._pc or self.ended:
            return
        state = pc.connectionState
        if state == "connected":
            self.path = self._read_path()
            if self.connected_at is None:
                self.connected_at = time.time()
            self._cancel_setup_timer()
            self._set_state("connected")
            self._connected.set()
            if self._recorder is not None and self.restarts == 0:
                with contextlib.suppress(Exception):
                    await self._recorder.start()
        elif state == "failed":
            if self.connected_at is None and self.restarts == 0:
                await self._fail("ice_failed", "every candidate pair failed its checks")
            else:
                await self._path_lost("ICE failed")

    def _read_path(self) -> Path | None:
        pc = self._pc
        if pc is None:
            return None
        for transceiver in pc.getTransceivers():
            try:
                ice = transceiver.receiver.transport.transport
                connection = ice.iceGatherer._connection
                pair = connection._nominated.get(1)
            except AttributeError:
                continue
            if pair is None:
                continue
            local, remote = pair.local_candidate, pair.remote_candidate
            relay_protocol = None
            if local.type == "relay":
                relay_protocol = "tls" if connection.turn_ssl else connection.turn_transport
            return Path(
                local_type=local.type,
                remote_type=remote.type,
                local_address=f"{local.host}:{local.port}",
                remote_address=f"{remote.host}:{remote.port}",
                protocol=local.transport.lower(),
                relay_protocol=relay_protocol,
            )
        return None

    def _arm_setup_timer(self) -> None:
        self._cancel_setup_timer()
        loop = asyncio.get_running_loop()
        self._setup_timer = loop.call_later(
            self.setup_timeout,
            lambda: self._spawn(
                self._fail("setup_timeout", f"no media path within {self.setup_timeout:g} s")
            ),
        )

    def _cancel_setup_timer(self) -> None:
        if self._setup_timer is not None:
            self._setup_timer.cancel()
            self._setup_timer = None

    async def _remote_end(self, reason: str) -> None:
        warning = await self._e2ee_stop()
        if self.ended:
            return
        if warning:
            await self._finish("failed", "e2ee", warning)
        elif reason in ("declined", "no_answer", "cancelled"):
            await self._finish("failed", reason, FAILURE_REASONS[reason])
        elif self.connected_at is None and reason == "hangup":
            await self._finish("failed", "peer_left", FAILURE_REASONS["peer_left"])
        else:
            await self._finish("ended", "remote_hangup" if reason == "hangup" else reason, "")

    async def _fail(self, reason: str, detail: str) -> None:
        if self._closing or self.ended:
            return
        log.info("call %s failed: %s (%s)", self.id, reason, detail)
        self._closing = True  # stop taking events before telling signaling
        with contextlib.suppress(ClientError):
            await self.session.request("call.leave", call_id=self.id, within=3)
        await self._finish("failed", reason, detail or FAILURE_REASONS.get(reason, ""))

    async def _finish(self, state: CallState, reason: str, detail: str) -> None:
        if self._done.is_set():
            return
        self.reason, self.detail = reason, detail
        self._set_state(state)
        self._done.set()
        self._cancel_setup_timer()
        self.session._forget(self)
        await self._discard()

    async def _discard(self) -> None:
        if self.e2ee is not None:
            self.e2ee.end()  # erase the call's keys
        if self._recorder is not None:
            with contextlib.suppress(Exception):
                await self._recorder.stop()
            self._recorder = None
        pc, self._pc = self._pc, None
        if pc is not None:
            await self._close_pc(pc)
        if self._offer_ready is not None and not self._offer_ready.done():
            self._offer_ready.cancel()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        self.source.close()

    async def _close_pc(self, pc: RTCPeerConnection) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pc.close(), 5)

    def _set_state(self, state: CallState) -> None:
        if state == self.state:
            return
        self.state = state
        self.session._call_changed(CallStateChanged(self, state, self.reason))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
