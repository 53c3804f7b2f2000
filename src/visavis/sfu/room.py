"""Rooms, participants, producers and consumers: the SFU's ownership tree.

A :class:`Room` owns :class:`Participant` objects; a participant owns one
:class:`~visavis.sfu.transport.WebRtcTransport`, its :class:`Producer` objects (what it
publishes, one per sending m-line, each with one or three simulcast :class:`Layer`) and
its :class:`Consumer` objects (one per receive slot, each fed by another participant's
producer). Nothing here reads a clock: the shells pass ``now`` (seconds, monotonic).

The per-packet work is the fast path's (:mod:`visavis.sfu.fastpath`, native when built):
``Layer`` is a fast-path ``Source`` and ``Consumer`` a ``Sink``, so the forwarding loop
reads and updates their fields directly and this module sees the same values. This
module is the control path: offers and answers, slot assignment, the SSRC tables the
fast path routes by, RTCP handling (NACK answers in :mod:`visavis.sfu.forward`), the
periodic tick.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel

from visavis.protocol.rtp.av1 import URI_DEPENDENCY_DESCRIPTOR
from visavis.protocol.rtp.errors import RtcpError, RtpError
from visavis.protocol.rtp.extensions import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    URI_REPAIRED_RID,
    URI_RID,
    URI_TRANSPORT_CC,
    find_extension,
)
from visavis.protocol.rtp.keyframes import VideoCodec
from visavis.protocol.rtp.rtcp import (
    ReportBlock,
    RtcpFir,
    RtcpNack,
    RtcpPli,
    RtcpRemb,
    RtcpRr,
    RtcpSr,
    RtcpTwcc,
    parse_compound,
)
from visavis.protocol.rtp.rtcp.twcc import build_twcc
from visavis.protocol.sdp import (
    DD_CODECS,
    AnswerParams,
    Codec,
    MediaSection,
    Offer,
    SendInfo,
    UnsupportedCodec,
    build_answer,
    parse_offer,
    require_video_codec,
    sent_dependency_descriptor,
)
from visavis.protocol.sdp import SdpError as SdpSubsetError
from visavis.sfu import fastpath, forward
from visavis.sfu.bwe import BandwidthEstimator, RembProber
from visavis.sfu.errors import CodecError, SdpError
from visavis.sfu.gcc import DelayBasedBwe, PacketResult, Prober, Usage
from visavis.sfu.messages import (
    Answer,
    DominantSpeaker,
    ParticipantInfo,
    ParticipantJoined,
    ParticipantLeft,
    Renegotiate,
    StreamInfo,
)
from visavis.sfu.settings import SfuSettings
from visavis.sfu.simulcast import choose_layer
from visavis.sfu.speaker import SpeakerDetector
from visavis.sfu.stats import SfuStats
from visavis.sfu.transport import WebRtcTransport

if TYPE_CHECKING:
    from visavis.sfu.cascade import Bridge

HISTORY_SIZE = 1024  # packets of history per video layer, for NACK answers
FEEDBACK_MAX = 200  # packets reported per TWCC feedback to a publisher


def _random_ssrc() -> int:
    return secrets.randbits(32) or 1


class Layer(fastpath.Source):
    """One encoding of a producer (the only one without simulcast).

    The fast path keeps its reception statistics (RFC 3550 A.3: ``base_seq``, -1 before
    the first packet, ``max_seq``, ``cycles``, ``received``), ``octets_window``,
    ``last_packet`` and the NACK ``history``.
    """

    def __init__(self, producer: Producer, index: int, rid: str | None, history: bool) -> None:
        room = producer.participant.room
        pid = producer.participant.id
        level_id = producer.audio_level_id

        def on_level(level: int, now: float) -> None:
            room.speaker.observe(pid, level, now)

        super().__init__(
            index,
            producer.is_video,
            -1 if level_id is None else level_id,
            [None] * HISTORY_SIZE if history else None,
            producer.consumers,
            on_level if level_id is not None else None,
        )
        if producer.is_video:  # how the fast path finds this layer's keyframes
            self.codec = int(room.video_codec)
            self.dd_id = -1 if producer.dd_id is None else producer.dd_id
        self.producer = producer
        self.rid = rid
        self.ssrc: int | None = None
        self.rtx_ssrc: int | None = None
        self.bitrate: float | None = None
        self.last_keyframe_request = -1e9
        self.expected_prior = 0
        self.received_prior = 0
        self.last_sr_ntp = 0
        self.last_sr_at = 0.0
        self.losses = forward.LossTracker()  # holes to NACK to the publisher (video)

    def report_block(self, now: float) -> ReportBlock | None:
        if self.ssrc is None or self.base_seq < 0:
            return None
        extended = self.cycles + self.max_seq
        expected = extended - self.base_seq + 1
        lost = max(0, expected - self.received)
        expected_interval = expected - self.expected_prior
        received_interval = self.received - self.received_prior
        self.expected_prior, self.received_prior = expected, self.received
        lost_interval = expected_interval - received_interval
        fraction = (
            0
            if expected_interval <= 0 or lost_interval <= 0
            else ((lost_interval << 8) // expected_interval)
        )
        lsr = (self.last_sr_ntp >> 16) & 0xFFFFFFFF
        dlsr = int((now - self.last_sr_at) * 65536) if self.last_sr_ntp else 0
        return ReportBlock(
            self.ssrc, min(fraction, 255), min(lost, 0x7FFFFF), extended & 0xFFFFFFFF, 0, lsr, dlsr
        )


class Producer:
    """One track a participant publishes."""

    def __init__(
        self,
        participant: Participant,
        mid: str,
        kind: str,
        clock_rate: int,
        pt: int,
        rtx_pt: int | None,
        rids: list[str],
        ssrc: int | None,
        rtx_ssrc: int | None,
        audio_level_id: int | None,
        source: str | None = None,
        dd_id: int | None = None,
    ) -> None:
        self.participant = participant
        self.mid = mid
        self.kind = kind
        # microphone, camera or screen (a screen share: its own track beside the camera)
        self.source = source or ("camera" if kind == "video" else "microphone")
        self.is_video = kind == "video"
        self.clock_rate = clock_rate
        self.pt = pt
        self.rtx_pt = rtx_pt
        self.audio_level_id = audio_level_id
        self.nack = True  # the publisher takes generic NACKs (its codec offers "nack")
        self.dd_id = dd_id  # dependency descriptor extension id (VP9/AV1 rooms), if sent
        self.consumers: list[Consumer] = []  # shared with every layer (the fast path's sinks)
        names: list[str | None] = list(rids) if rids else [None]
        self.layers = [Layer(self, i, rid, self.is_video) for i, rid in enumerate(names)]
        codec = participant.room.video_codec
        # One VP9 stream, or one AV1 stream with the dependency descriptor: it may carry
        # spatial layers (SVC), which consumers select; VP8 and VP9 packets (AV1's
        # descriptor) say their temporal layer, which thumbnails drop.
        av1_dd = codec is VideoCodec.AV1 and dd_id is not None
        self.svc = self.is_video and not rids and (codec is VideoCodec.VP9 or av1_dd)
        self.temporal_layers = self.is_video and (
            codec in (VideoCodec.VP8, VideoCodec.VP9) or av1_dd
        )
        if ssrc is not None and not rids:
            self.layers[0].ssrc = ssrc
            self.layers[0].rtx_ssrc = rtx_ssrc
        self.id = f"{participant.id}/{mid}"

    def layer_bitrates(self, now: float) -> list[float | None]:
        return [
            (layer.bitrate or 1.0) if now - layer.last_packet < 2.0 else None
            for layer in self.layers
        ]


class Consumer(fastpath.Sink):
    """One subscriber's receive slot fed by one producer (the fast path counts
    ``packets`` and ``octets`` and drives ``rewriter`` and ``selector``)."""

    def __init__(
        self,
        subscriber: Participant,
        producer: Producer,
        mid: str,
        pt: int,
        rtx_pt: int | None,
        ext_ids: dict[str, int],
        slot: FreedSlot | None = None,
        now: float = 0.0,
    ) -> None:
        abs_id = ext_ids.get(URI_ABS_SEND_TIME) if producer.is_video else None
        level_id = ext_ids.get(URI_AUDIO_LEVEL) if not producer.is_video else None
        if slot is None:
            ssrc, seq, ts = _random_ssrc(), secrets.randbits(16), secrets.randbits(32)
        else:  # the slot's stream goes on: same SSRC, the next sequence number and time
            elapsed = now - slot.last_time if 0 <= now - slot.last_time < 3600 else 0.0
            ssrc, seq = slot.ssrc, slot.next_seq
            ts = (slot.last_ts + round(elapsed * producer.clock_rate)) & 0xFFFFFFFF
        super().__init__(
            subscriber.transport.link,
            ssrc,
            pt,
            -1 if abs_id is None else abs_id,
            -1 if level_id is None else level_id,
            fastpath.Rewriter(producer.clock_rate, initial_seq=seq, initial_ts=ts),
            fastpath.Selector(target=len(producer.layers) - 1),
        )
        self.subscriber = subscriber
        self.transport = subscriber.transport
        self.producer = producer
        self.mid = mid
        self.rtx_ssrc: int | None = None
        if rtx_pt is not None:
            self.rtx_ssrc = slot.rtx_ssrc if slot is not None and slot.rtx_ssrc else _random_ssrc()
        self.rtx_pt = rtx_pt
        if not producer.is_video:
            self.rewriter.switch(0)
        self.rtx_seq = secrets.randbits(16)
        self.nack_tokens = 100.0
        self.nack_refilled = 0.0
        self.track_id = f"{producer.participant.id}-{producer.kind}-{producer.mid}"

    def send_info(self) -> SendInfo:
        return SendInfo(self.ssrc, self.rtx_ssrc, self.producer.participant.id, self.track_id)

    @property
    def wants_keyframe(self) -> bool:
        """Waiting for a keyframe: a simulcast switch, more spatial or temporal layers."""
        if self.selector.target < 0:  # paused
            return False
        return bool(
            self.selector.wants_keyframe
            or self.spatial < self.spatial_target
            or self.temporal < self.temporal_target
        )

    def freed(self) -> FreedSlot:
        """What this slot sent last, for the next producer it carries."""
        return FreedSlot(
            self.ssrc,
            self.rtx_ssrc,
            (self.rewriter.last_sequence + 1) & 0xFFFF,
            self.rewriter.last_timestamp,
            max(layer.last_packet for layer in self.producer.layers),
        )


@dataclass(slots=True)
class FreedSlot:
    """A receive slot whose producer went (left, unpublished, or its node's link dropped).

    The next producer the slot carries continues the same outgoing stream: the same SSRC,
    the next sequence number, timestamps that follow on in time. A receiver keys streams
    by SSRC and may never learn a new one for a slot it already receives on (aiortc
    registers a receiver's SSRCs once), and a jump in sequence numbers can look like
    late packets to its jitter buffer; a continued stream is simply a new keyframe.
    """

    ssrc: int
    rtx_ssrc: int | None
    next_seq: int
    last_ts: int
    last_time: float  # when its producer last sent (monotonic seconds)


Notify = Callable[[BaseModel], None]


class Participant:
    """A member of a room: its transport, what it publishes and what it receives."""

    remote = False  # True: on another node, seen here through a cascade link

    def __init__(
        self,
        room: Room,
        participant_id: str,
        user: str,
        device: str,
        transport_factory: Callable[[Participant], WebRtcTransport],
        notify: Notify,
        now: float,
    ) -> None:
        self.room = room
        self.id = participant_id
        self.user = user
        self.device = device
        self.notify = notify
        self.joined_at = now
        self.transport = transport_factory(self)
        self.rtcp_ssrc = _random_ssrc()
        self.producers: dict[str, Producer] = {}
        self.ssrc_map: dict[int, tuple[Producer, Layer, bool]] = {}
        self.slots: dict[str, str] = {}  # mid -> kind, receive slots of the last offer
        self.consumers: dict[str, Consumer] = {}  # mid -> consumer
        self.consumers_by_ssrc: dict[int, Consumer] = {}
        self.freed: dict[str, FreedSlot] = {}  # mid -> idle slot's last stream
        self.ext_ids: dict[str, dict[str, int]] = {"audio": {}, "video": {}}
        self.bwe = BandwidthEstimator(initial=room.settings.initial_bandwidth)
        # With transport-wide CC negotiated (its slots): the SFU's own delay-based
        # estimate from the subscriber's TWCC feedback, and probing to climb back up.
        self.gcc: DelayBasedBwe | None = None
        self.prober = Prober()
        self.remb_prober = RembProber()  # without TWCC: padding so that its REMB can climb
        self.desired_rate = 0.0  # bits/s its slots would take with no bandwidth limit
        self.allocated_rate = 0.0  # bits/s of the layers the allocator chose
        self.twcc_reported = -1  # publishing: last transport-wide seq put in our feedback
        self.twcc_feedback_count = 0
        self.visible: set[str] = set()  # tiles shown large (layout message)
        self.thumbnails: set[str] | None = None  # tiles shown small; None: not said
        self.rtcp_tokens = float(room.settings.rtcp_burst)
        self.rtcp_refilled = now
        self.closed = False
        self.on_removed: Callable[[str], None] = lambda reason: None

    def info(self) -> ParticipantInfo:
        return ParticipantInfo(participant_id=self.id, user=self.user, device=self.device)

    # -- TransportListener ------------------------------------------------------------
    def on_transport_connected(self, now: float) -> None:
        for consumer in self.consumers.values():
            if consumer.producer.is_video and consumer.selector.target >= 0:
                self.room.request_keyframe(consumer.producer, consumer.selector.target, now)

    def on_rtp(self, data: bytes, now: float) -> None:
        if len(data) < 12:
            self.room.stats.drop("malformed_rtp")
            return
        entry = self.ssrc_map.get(struct.unpack_from("!I", data, 8)[0])
        if entry is None:
            entry = self._learn_ssrc(data)
            if entry is None:
                self.room.stats.drop("unknown_ssrc")
                return
        producer, layer, is_rtx = entry
        if is_rtx:  # a repair the SFU asked for (NACK), or padding (the publisher probing)
            original = (
                None if layer.ssrc is None else forward.unwrap_rtx(data, layer.ssrc, producer.pt)
            )
            if original is None:
                self.room.stats.drop("publisher_rtx")
                return
            self.room.stats.publisher_repairs += 1
            data = original
        self.room.forwarder.forward(layer, data, now)

    def _bind_ssrc(self, ssrc: int, producer: Producer, layer: Layer, is_rtx: bool) -> None:
        """Route ``ssrc``: RTX stays with Python (dropped), media goes to the fast path."""
        self.ssrc_map[ssrc] = (producer, layer, is_rtx)
        if not is_rtx:
            self.transport.link.sources[ssrc] = layer

    def _learn_ssrc(self, data: bytes) -> tuple[Producer, Layer, bool] | None:
        """Bind an unannounced SSRC by its MID and RID header extensions (simulcast)."""
        ids = self.ext_ids["video"]
        mid_id, rid_id, rrid_id = ids.get(URI_MID), ids.get(URI_RID), ids.get(URI_REPAIRED_RID)
        if mid_id is None:
            return None
        mid = find_extension(data, mid_id)
        producer = self.producers.get(mid.decode("ascii", "replace")) if mid else None
        if producer is None:
            return None
        ssrc = struct.unpack_from("!I", data, 8)[0]
        for ext_id, is_rtx in ((rid_id, False), (rrid_id, True)):
            if ext_id is None:
                continue
            rid = find_extension(data, ext_id)
            if rid is None:
                continue
            name = rid.decode("ascii", "replace")
            for layer in producer.layers:
                if layer.rid == name:
                    if is_rtx:
                        layer.rtx_ssrc = ssrc
                    else:
                        layer.ssrc = ssrc
                    self._bind_ssrc(ssrc, producer, layer, is_rtx)
                    return self.ssrc_map[ssrc]
        layer = producer.layers[0]
        if len(producer.layers) == 1 and layer.ssrc is None:
            layer.ssrc = ssrc
            self._bind_ssrc(ssrc, producer, layer, False)
            return self.ssrc_map[ssrc]
        return None

    def on_rtcp(self, data: bytes, now: float) -> None:
        settings = self.room.settings
        self.rtcp_tokens = min(
            float(settings.rtcp_burst),
            self.rtcp_tokens + (now - self.rtcp_refilled) * settings.rtcp_rate,
        )
        self.rtcp_refilled = now
        if self.rtcp_tokens < 1:
            self.room.stats.drop("rtcp_rate_limited")
            return
        self.rtcp_tokens -= 1
        try:
            packets = parse_compound(data)
        except RtpError:
            self.room.stats.drop("malformed_rtcp")
            return
        for packet in packets:
            if isinstance(packet, RtcpSr):
                self._on_sender_report(packet, now)
            elif isinstance(packet, RtcpRr):
                self._on_receiver_report(packet, now)
            elif isinstance(packet, RtcpRemb):
                congested_at = self.bwe.congested_at
                self.bwe.on_remb(packet.bitrate, now, packet.ssrcs)
                if self.bwe.congested_at != congested_at:
                    self.room.stats.congestion_signals += 1
            elif isinstance(packet, RtcpTwcc):
                self._on_transport_feedback(packet, now)
            elif isinstance(packet, RtcpNack):
                consumer = self.consumers_by_ssrc.get(packet.media_ssrc)
                if consumer is not None:
                    forward.answer_nack(self.room, consumer, packet.lost, now)
            elif isinstance(packet, RtcpPli):
                self._on_keyframe_request(packet.media_ssrc, now)
            elif isinstance(packet, RtcpFir):
                for ssrc, _ in packet.entries:
                    self._on_keyframe_request(ssrc, now)

    def _on_receiver_report(self, report: RtcpRr, now: float) -> None:
        """Loss from the subscriber's reports on what we send it: the worst of its media
        streams (an RTX stream's own numbering says nothing of the path's loss)."""
        lost = [
            block.fraction_lost
            for block in report.reports
            if (consumer := self.consumers_by_ssrc.get(block.ssrc)) is not None
            and consumer.ssrc == block.ssrc
        ]
        if not lost:
            return
        congested_at = self.bwe.congested_at
        self.bwe.on_loss(max(lost) / 256, now)
        if self.gcc is None and self.bwe.congested_at != congested_at:
            self.room.stats.congestion_signals += 1

    def _on_transport_feedback(self, feedback: RtcpTwcc, now: float) -> None:
        """TWCC feedback: match each report to the send time and size the fast path
        remembered for that transport-wide sequence number, run the delay-based
        estimator, and re-allocate layers at once when it signals overuse."""
        gcc = self.gcc
        if gcc is None:
            return
        self.room.stats.twcc_feedback += 1
        link = self.transport.link
        results: list[PacketResult] = []
        for seq, arrival in feedback.arrivals():
            if arrival is None:
                continue
            sent = link.sent(seq)
            if sent is None:
                continue
            result = PacketResult(sent[0], arrival / 1e6, sent[1])
            results.append(result)
            self.prober.on_acked(result)
        was = gcc.usage
        self.bwe.on_delay_based(gcc.on_feedback(results, now), now)
        if gcc.usage is Usage.OVERUSE and was is not Usage.OVERUSE:
            self.room.stats.congestion_signals += 1
            self.room._allocate(self, now)

    def _on_keyframe_request(self, ssrc: int, now: float) -> None:
        consumer = self.consumers_by_ssrc.get(ssrc)
        if consumer is None or not consumer.producer.is_video or consumer.selector.target < 0:
            return
        layer = consumer.selector.current
        self.room.request_keyframe(
            consumer.producer, consumer.selector.target if layer is None else layer, now
        )

    def _on_sender_report(self, sr: RtcpSr, now: float) -> None:
        entry = self.ssrc_map.get(sr.ssrc)
        if entry is None:
            return
        producer, layer, _ = entry
        layer.last_sr_ntp = sr.ntp_timestamp
        layer.last_sr_at = now
        for consumer in producer.consumers:
            if producer.is_video and consumer.selector.current != layer.index:
                continue
            offset = consumer.rewriter.timestamp_offset()
            if offset is None:
                continue
            consumer.transport.send_rtcp(
                RtcpSr(
                    consumer.ssrc,
                    sr.ntp_timestamp,
                    (sr.rtp_timestamp + offset) & 0xFFFFFFFF,
                    consumer.packets & 0xFFFFFFFF,
                    consumer.octets & 0xFFFFFFFF,
                ).serialize()
            )


def _send_in_python(
    raw: object, received: object, outgoing: list[tuple[fastpath.Link, bytes]] | None, now: float
) -> None:
    for link, plain in outgoing or ():
        link.owner.send_rtp(plain)


@dataclass
class OfferResult:
    answer: Answer
    renegotiate: Renegotiate | None


class Room:
    """A group call: its participants and the state shared between them."""

    def __init__(
        self,
        room_id: str,
        settings: SfuSettings,
        stats: SfuStats,
        answer_params: Callable[[WebRtcTransport], AnswerParams],
        forwarder: fastpath.Forwarder | None = None,
        video_codec: VideoCodec = VideoCodec.VP8,
    ) -> None:
        self.id = room_id
        self.video_codec = video_codec  # one per room: payloads are forwarded as they are
        self.settings = settings
        self.stats = stats
        self.answer_params = answer_params
        self.participants: dict[str, Participant] = {}
        self.speaker = SpeakerDetector()
        self.last_report = 0.0
        self.last_tick = -1.0
        self.links: dict[str, Bridge] = {}  # peer node -> the link sharing this room
        # Participants to ask for a new offer at the next tick (renegotiate_later).
        self.renegotiate_due: dict[str, Participant] = {}
        # Without a media socket (unit tests), every packet goes out through Python.
        self.forwarder = forwarder or fastpath.Forwarder(None, {}, stats, _send_in_python)

    def codec_of(self, section: MediaSection) -> Codec | None:
        """The codec this room forwards on an m-line (Opus, or the room's video codec)."""
        return section.codec(self.video_codec)

    # -- membership ---------------------------------------------------------------------
    def add(self, participant: Participant) -> None:
        for other in self.participants.values():
            other.notify(ParticipantJoined(participant=participant.info()))
        self.participants[participant.id] = participant
        if not participant.remote:
            for bridge in self.links.values():
                bridge.joined(participant)

    def local(self) -> int:
        """Participants connected to this node (not through a cascade link)."""
        return sum(1 for p in self.participants.values() if not p.remote)

    def remove(self, participant: Participant, reason: str = "left") -> None:
        """Remove a participant; the others' media is untouched, their slots go idle."""
        if self.participants.get(participant.id) is not participant:
            return
        del self.participants[participant.id]
        participant.closed = True
        self.speaker.remove(participant.id)
        for producer in participant.producers.values():
            for consumer in producer.consumers:
                sub = consumer.subscriber
                sub.consumers.pop(consumer.mid, None)
                sub.consumers_by_ssrc.pop(consumer.ssrc, None)
                if isinstance(sub, Participant):
                    sub.freed[consumer.mid] = consumer.freed()
            producer.consumers.clear()  # the list the fast path's sources share
        for consumer in participant.consumers.values():
            if consumer in consumer.producer.consumers:
                consumer.producer.consumers.remove(consumer)
        participant.consumers.clear()
        participant.consumers_by_ssrc.clear()
        left = ParticipantLeft(participant_id=participant.id, reason=reason)
        for other in self.participants.values():
            other.notify(left)
            if participant.producers:
                self.renegotiate_later(other)
        participant.on_removed(reason)
        if not participant.remote:
            for bridge in self.links.values():
                bridge.left(participant, reason)

    # -- negotiation --------------------------------------------------------------------
    def _parse_offer(self, sdp: str) -> Offer:
        """The offer parsed and checked for the room's codec; the SDP subset's errors
        become the control protocol's (``unsupported_codec``, ``bad_sdp``), message kept."""
        try:
            offer = parse_offer(sdp)
            require_video_codec(offer, self.video_codec)
        except UnsupportedCodec as exc:
            raise CodecError(str(exc)) from exc
        except SdpSubsetError as exc:
            raise SdpError(str(exc)) from exc
        return offer

    def handle_offer(
        self, participant: Participant, sdp: str, now: float, screen: Collection[str] = ()
    ) -> OfferResult:
        """Apply a client's offer: new producers (``screen``: the mids that carry a screen
        share), producers no longer sent unpublished, slot assignment; return the answer."""
        offer = self._parse_offer(sdp)
        codec_of = self.codec_of
        sending_video = {
            s.mid
            for s in offer.media
            if s.kind == "video"
            and not s.rejected
            and codec_of(s) is not None
            and s.direction in ("sendrecv", "sendonly")
        }
        for mid in screen:
            if mid not in sending_video:
                raise SdpError(
                    f"screen names mid {mid!r}, which is no video m-line this offer sends"
                )
        transport = participant.transport
        if not transport.set_remote(offer.ice_ufrag, offer.fingerprints):
            raise SdpError("ICE restart is not supported: rejoin instead")
        self._unpublish_stopped(participant, offer.media)
        new_producers: list[Producer] = []
        receive: set[str] = set()
        slots: dict[str, str] = {}
        for section in offer.media:
            codec = codec_of(section)
            if section.rejected or codec is None or section.kind not in ("audio", "video"):
                continue
            participant.ext_ids[section.kind].update(section.extensions)
            sending = section.direction in ("sendrecv", "sendonly")
            if sending:
                receive.add(section.mid)
                if section.mid not in participant.producers:
                    rtx_pt = section.rtx_for(codec.pt) if section.kind == "video" else None
                    if len(section.rids) > 3:
                        raise SdpError("at most three simulcast layers")
                    producer = Producer(
                        participant,
                        section.mid,
                        section.kind,
                        codec.clock_rate,
                        codec.pt,
                        rtx_pt,
                        section.rids,
                        section.media_ssrc,
                        section.rtx_ssrc,
                        section.extensions.get(URI_AUDIO_LEVEL),
                        "screen" if section.mid in screen else None,
                        section.extensions.get(URI_DEPENDENCY_DESCRIPTOR)
                        if self.video_codec in DD_CODECS
                        else None,
                    )
                    producer.nack = "nack" in codec.feedback
                    participant.producers[section.mid] = producer
                    for layer in producer.layers:
                        if layer.ssrc is not None:
                            participant._bind_ssrc(layer.ssrc, producer, layer, False)
                        if layer.rtx_ssrc is not None:
                            participant._bind_ssrc(layer.rtx_ssrc, producer, layer, True)
                    new_producers.append(producer)
            elif section.direction == "recvonly":
                slots[section.mid] = section.kind
        participant.slots = slots
        self._negotiate_transport_cc(participant, offer.media)
        # Slots no longer offered lose their consumer.
        for mid in [m for m in participant.consumers if m not in slots]:
            self._drop_consumer(participant.consumers[mid])
        for mid in [m for m in participant.freed if m not in slots]:
            del participant.freed[mid]
        # Assign unconsumed remote producers to free slots, in m-line order.
        consumed = {c.producer for c in participant.consumers.values()}
        waiting = [
            p
            for other in self.participants.values()
            if other is not participant
            for p in other.producers.values()
            if p not in consumed
        ]
        by_mid = {s.mid: s for s in offer.media}
        for mid, kind in slots.items():
            if mid in participant.consumers:
                continue
            found = next((p for p in waiting if p.kind == kind), None)
            if found is None:
                continue
            waiting.remove(found)
            producer = found
            section = by_mid[mid]
            codec = codec_of(section)
            assert codec is not None
            rtx_pt = section.rtx_for(codec.pt) if kind == "video" else None
            consumer = Consumer(
                participant,
                producer,
                mid,
                codec.pt,
                rtx_pt,
                section.extensions,
                participant.freed.pop(mid, None),
                now,
            )
            if producer.is_video:
                dd_sent = sent_dependency_descriptor(offer, section, self.video_codec)
                consumer.dd_id = -1 if dd_sent is None else dd_sent
            participant.consumers[mid] = consumer
            participant.consumers_by_ssrc[consumer.ssrc] = consumer
            if consumer.rtx_ssrc is not None:
                participant.consumers_by_ssrc[consumer.rtx_ssrc] = consumer
            producer.consumers.append(consumer)
            if producer.is_video and participant.transport.connected:
                self.request_keyframe(producer, consumer.selector.target, now)
        send = {mid: c.send_info() for mid, c in participant.consumers.items()}
        sdp_answer = build_answer(
            offer,
            self.answer_params(transport),
            receive=receive,
            send=send,
            video_codec=self.video_codec,
        )
        streams = [
            StreamInfo(
                mid=mid,
                participant_id=c.producer.participant.id,
                user=c.producer.participant.user,
                kind=c.producer.kind,
                source=c.producer.source,
            )
            for mid, c in participant.consumers.items()
        ]
        # The new slots' layers now, not at the next report: a consumer starts at the
        # top layer, and a room of 32 starting at once would otherwise forward every
        # top layer to everyone (3x the steady state's packets) until the first report
        # after media arrives and then a keyframe of each lower layer (seconds).
        self._allocate(participant, now)
        if new_producers and not participant.remote:
            for bridge in self.links.values():
                for producer in new_producers:
                    bridge.published(producer, now)
        if new_producers:
            for other in self.participants.values():
                if other is not participant:
                    self.renegotiate_later(other)
        # This answer and its renegotiation request cover what a pending one would ask.
        self.renegotiate_due.pop(participant.id, None)
        return OfferResult(
            Answer(sdp=sdp_answer, streams=streams), self.renegotiation_for(participant)
        )

    def _negotiate_transport_cc(self, participant: Participant, media: list[MediaSection]) -> None:
        """Transport-wide CC, where the answer has it (``sdp.build_answer``): on receive
        slots every packet to this participant carries a transport-wide sequence number
        and its feedback drives :attr:`Participant.gcc`; on publishing m-lines the fast
        path notes when each of its packets arrived and each tick sends it feedback."""
        answered = [s for s in media if s.twcc_answered]
        slots = [s.extensions[URI_TRANSPORT_CC] for s in answered if s.direction == "recvonly"]
        sends = [s.extensions[URI_TRANSPORT_CC] for s in answered if s.direction != "recvonly"]
        link = participant.transport.link
        link.rx_twcc_id = sends[0] if sends else -1
        link.twcc_id = slots[0] if slots else -1
        if slots and participant.gcc is None:
            participant.gcc = DelayBasedBwe(self.settings.initial_bandwidth)

    def _unpublish_stopped(self, participant: Participant, media: list[MediaSection]) -> None:
        """Producers whose m-line this offer no longer sends on (a screen share that
        stopped: ``inactive``) are removed; each subscriber's slot is freed."""
        sending = {
            s.mid
            for s in media
            if not s.rejected
            and self.codec_of(s) is not None
            and s.direction in ("sendrecv", "sendonly")
        }
        for mid in [m for m in participant.producers if m not in sending]:
            self.unpublish(participant.producers[mid])

    def unpublish(self, producer: Producer) -> None:
        """Stop forwarding ``producer``: its consumers go, the subscribers renegotiate
        (their slot is answered ``inactive`` and becomes free for the next producer)."""
        participant = producer.participant
        if participant.producers.get(producer.mid) is not producer:
            return
        del participant.producers[producer.mid]
        for ssrc in [s for s, entry in participant.ssrc_map.items() if entry[0] is producer]:
            del participant.ssrc_map[ssrc]
            participant.transport.link.sources.pop(ssrc, None)
        subscribers: list[Participant] = []
        for consumer in list(producer.consumers):
            if isinstance(consumer.subscriber, Participant):
                self._drop_consumer(consumer)
                subscribers.append(consumer.subscriber)
        if not participant.remote:
            for bridge in self.links.values():
                bridge.unpublished(producer)
        producer.consumers.clear()  # the list the fast path's sources share
        for subscriber in subscribers:
            if not subscriber.closed:
                self.renegotiate_later(subscriber)

    def _drop_consumer(self, consumer: Consumer) -> None:
        sub = consumer.subscriber
        sub.freed[consumer.mid] = consumer.freed()
        sub.consumers.pop(consumer.mid, None)
        sub.consumers_by_ssrc.pop(consumer.ssrc, None)
        if consumer.rtx_ssrc is not None:
            sub.consumers_by_ssrc.pop(consumer.rtx_ssrc, None)
        if consumer in consumer.producer.consumers:
            consumer.producer.consumers.remove(consumer)

    def available(self, participant: Participant) -> dict[str, int]:
        """Remote producers per kind that ``participant`` could receive."""
        counts = {"audio": 0, "video": 0}
        for other in self.participants.values():
            if other is not participant:
                for producer in other.producers.values():
                    counts[producer.kind] += 1
        return counts

    def renegotiate_later(self, participant: Participant) -> None:
        """Ask ``participant`` to offer again at the next tick, once however many
        producers came or went meanwhile: when 32 people join in the same second, each
        used to get 31 requests (a client that does not coalesce them offers 31 times,
        each offer ~2 ms of SDP work on the loop that also reads the media socket)."""
        self.renegotiate_due[participant.id] = participant

    def _send_renegotiations(self) -> None:
        due, self.renegotiate_due = self.renegotiate_due, {}
        for pid, participant in due.items():
            if self.participants.get(pid) is participant and not participant.closed:
                participant.notify(self.renegotiation_for(participant) or Renegotiate())

    def renegotiation_for(self, participant: Participant) -> Renegotiate | None:
        """A renegotiation request if some remote producer has no slot at ``participant``."""
        consumed = {c.producer for c in participant.consumers.values()}
        missing = {"audio": 0, "video": 0}
        for other in self.participants.values():
            if other is not participant:
                for producer in other.producers.values():
                    if producer not in consumed:
                        missing[producer.kind] += 1
        if not any(missing.values()):
            return None
        free = {"audio": 0, "video": 0}
        for mid, kind in participant.slots.items():
            if mid not in participant.consumers:
                free[kind] += 1
        return Renegotiate(
            audio=max(0, missing["audio"] - free["audio"]),
            video=max(0, missing["video"] - free["video"]),
        )

    # -- keyframes and the periodic tick -------------------------------------------------
    def request_keyframe(self, producer: Producer, layer_index: int, now: float) -> None:
        """Send PLI for one layer to its publisher, at most once per keyframe interval."""
        layer = producer.layers[min(layer_index, len(producer.layers) - 1)]
        if (
            layer.ssrc is None
            or now - layer.last_keyframe_request < self.settings.keyframe_interval
        ):
            return
        layer.last_keyframe_request = now
        self.stats.keyframe_requests += 1
        publisher = producer.participant
        publisher.transport.send_rtcp(RtcpPli(publisher.rtcp_ssrc, layer.ssrc).serialize())

    def tick(self, now: float) -> list[Participant]:
        """Periodic work; returns participants found dead (already removed)."""
        dead: list[Participant] = []
        for _ in self.tick_steps(now, dead):
            pass
        return dead

    def tick_steps(self, now: float, dead: list[Participant]) -> Iterator[None]:
        """The periodic work, yielding after each participant's share: the server reads
        the media socket between steps (at 32 people a whole tick takes about half a
        millisecond, the 1 s report and allocation about two, and every packet arriving
        meanwhile would wait). Participants removed while it is suspended are skipped;
        ``dead`` receives those found dead (already removed)."""
        self._send_renegotiations()
        dominant = self.speaker.tick(now)
        if dominant is not None:
            message = DominantSpeaker(participant_id=dominant)
            for participant in self.participants.values():
                participant.notify(message)
        for participant in list(self.participants.values()):
            if self.participants.get(participant.id) is not participant:
                continue
            for consumer in participant.consumers.values():
                if consumer.producer.is_video and consumer.wants_keyframe:
                    self.request_keyframe(consumer.producer, consumer.selector.target, now)
            yield
        for participant in list(self.participants.values()):
            if not participant.remote and now - participant.transport.last_seen > (
                self.settings.dead_timeout
            ):
                self.stats.participants_removed_dead += 1
                self.remove(participant, "timeout")
                dead.append(participant)
        self._select_audio(now)
        elapsed_tick = self.settings.tick_interval if self.last_tick < 0 else now - self.last_tick
        self.last_tick = now
        for participant in list(self.participants.values()):
            if participant.remote or self.participants.get(participant.id) is not participant:
                continue
            self._nack_publisher(participant, now)
            self._transport_feedback(participant, now)
            if participant.gcc is not None and participant.transport.connected:
                self._probe(participant, min(elapsed_tick, 0.5), now)
            elif participant.consumers and participant.transport.connected:
                self._probe_remb(participant, min(elapsed_tick, 0.5), now)
            yield
        if now - self.last_report >= 1.0:
            elapsed = now - self.last_report
            self.last_report = now
            yield from self._report(now, elapsed)

    def _nack_publisher(self, publisher: Participant, now: float) -> None:
        """Ask the publisher again for the video packets that did not arrive."""
        for producer in publisher.producers.values():
            if not producer.is_video or not producer.nack:
                continue
            for layer in producer.layers:
                if layer.ssrc is None or layer.history is None or layer.base_seq < 0:
                    continue
                lost = layer.losses.due(
                    layer.history, layer.base_seq, layer.cycles + layer.max_seq, now
                )
                if lost:
                    self.stats.nacks_sent += len(lost)
                    publisher.transport.send_rtcp(
                        RtcpNack(publisher.rtcp_ssrc, layer.ssrc, tuple(lost)).serialize()
                    )

    def _transport_feedback(self, publisher: Participant, now: float) -> None:
        """TWCC feedback to a publisher for what arrived since the last (at most
        ``FEEDBACK_MAX`` packets each): its send-side estimator works on it."""
        link = publisher.transport.link
        top = link.rx_twcc_max
        if link.rx_twcc_id < 0 or top < 0 or not publisher.transport.connected:
            return
        start = publisher.twcc_reported + 1 if publisher.twcc_reported >= 0 else link.rx_twcc_base
        start = max(start, top - 4 * FEEDBACK_MAX)  # after a long stall: the recent ones
        media = next((x.ssrc for p in publisher.producers.values() for x in p.layers if x.ssrc), 0)
        while start <= top:
            last = min(top, start + FEEDBACK_MAX - 1)
            arrivals = [None if t is None else int(t * 1e6) for t in link.arrivals(start, last)]
            publisher.twcc_feedback_count = (publisher.twcc_feedback_count + 1) & 0xFF
            try:
                feedback = build_twcc(
                    publisher.rtcp_ssrc, media, start & 0xFFFF, arrivals,
                    publisher.twcc_feedback_count,
                )  # fmt: skip
            except RtcpError:  # nothing arrived in the range, or a gap of over 8 s
                start = last + 1
                continue
            publisher.transport.send_rtcp(feedback.serialize())
            self.stats.twcc_feedback_sent += 1
            start = last + 1
        publisher.twcc_reported = top

    def _probe(self, subscriber: Participant, elapsed: float, now: float) -> None:
        """Probe a TWCC subscriber's downlink when its layers want more than the
        estimate; a probe that got through lifts the estimate (then re-allocate)."""
        gcc, prober = subscriber.gcc, subscriber.prober
        assert gcc is not None
        if prober.finish(gcc, now) is not None:
            subscriber.bwe.on_delay_based(gcc.estimate, now)
            self._allocate(subscriber, now)
        if not prober.active:
            prober.wanted(subscriber.desired_rate, gcc, now)
        budget = prober.budget(elapsed, now)
        if budget > 0:
            forward.send_probe(self, subscriber, budget, now)

    def _probe_remb(self, subscriber: Participant, elapsed: float, now: float) -> None:
        """Probe a REMB subscriber's downlink with RTX padding on its video slots while
        its layers want more than the estimate (:class:`~visavis.sfu.bwe.RembProber`);
        a probe that raised no congestion signal steps the estimate up (re-allocate)."""
        bwe, prober = subscriber.bwe, subscriber.remb_prober
        proven = prober.finish(bwe.congested_at, bwe.clean_at, now)
        if proven is not None:
            bwe.on_probe_result(proven, now)
            self._allocate(subscriber, now)
        target = prober.step(
            subscriber.desired_rate, bwe.estimate(now), bwe.congested_at, now, bwe.clean_at
        )
        budget = int((target - subscriber.allocated_rate) * elapsed / 8)
        if budget > 0:
            forward.send_probe(self, subscriber, budget, now)

    def _select_audio(self, now: float) -> None:
        """Forward less audio: in a room bigger than ``audio_last_n`` + 1, only the
        loudest ``audio_last_n`` (smoothed RFC 6464 levels) are forwarded whole; the
        others' packets go out only while their own level says voice (so speech onset is
        not clipped) and silence or noise (DTX comfort noise included) is dropped."""
        settings = self.settings
        audio = [
            (self.speaker.loudness(p.id, now), p.id, layer)
            for p in self.participants.values()
            for producer in p.producers.values()
            if not producer.is_video and producer.audio_level_id is not None
            for layer in producer.layers
        ]
        if len(self.participants) <= settings.audio_last_n + 1:
            loud = {pid for _, pid, _ in audio}
        else:
            ranked = sorted(audio, key=lambda item: item[0], reverse=True)
            loud = {pid for _, pid, _ in ranked[: settings.audio_last_n]}
        for _, pid, layer in audio:
            layer.quiet_above = -1 if pid in loud else settings.audio_voice_level

    def _report(self, now: float, elapsed: float) -> Iterator[None]:
        """Once a second: layer bitrates, receiver reports + REMB, layer allocation (a
        step per participant, see :meth:`tick_steps`)."""
        for participant in list(self.participants.values()):
            if self.participants.get(participant.id) is not participant:
                continue
            blocks: list[ReportBlock] = []
            video_ssrcs: list[int] = []
            for producer in participant.producers.values():
                for layer in producer.layers:
                    layer.bitrate = layer.octets_window * 8 / max(elapsed, 0.1)
                    layer.octets_window = 0
                    block = layer.report_block(now)
                    if block is not None:
                        blocks.append(block)
                        if producer.is_video:
                            video_ssrcs.append(block.ssrc)
            if blocks and participant.transport.connected and not participant.remote:
                data = RtcpRr(participant.rtcp_ssrc, tuple(blocks[:31])).serialize()
                if video_ssrcs:
                    data += RtcpRemb(
                        participant.rtcp_ssrc, self.settings.max_publish_bitrate, tuple(video_ssrcs)
                    ).serialize()
                participant.transport.send_rtcp(data)
            yield
        for participant in list(self.participants.values()):
            if self.participants.get(participant.id) is participant:
                self._allocate(participant, now)
                yield

    def set_layout(
        self, subscriber: Participant, visible: list[str], thumbnails: list[str] | None, now: float
    ) -> None:
        """Apply a ``layout`` message now (not at the next report): a tile shown again
        asks for its keyframe at once."""
        subscriber.visible = set(visible)
        subscriber.thumbnails = None if thumbnails is None else set(thumbnails)
        self._allocate(subscriber, now)
        for consumer in subscriber.consumers.values():
            if consumer.producer.is_video and consumer.wants_keyframe:
                self.request_keyframe(consumer.producer, consumer.selector.target, now)

    def _allocate(self, subscriber: Participant, now: float) -> None:
        """Choose each video consumer's layer from bandwidth, speakers and layout; pause
        the tiles the subscriber does not show (when its layout names its thumbnails)."""
        budget = subscriber.bwe.estimate(now)
        desired = allocated = 0.0
        videos = []
        shown = (
            None if subscriber.thumbnails is None else subscriber.visible | subscriber.thumbnails
        )
        for consumer in subscriber.consumers.values():
            if not consumer.producer.is_video:
                budget -= 40_000
                desired += 40_000
                allocated += 40_000
            elif shown is not None and consumer.producer.participant.id not in shown:
                if consumer.selector.target >= 0:  # pause: forward nothing until shown
                    consumer.selector.set_target(-1)
                    consumer.selector.reset()
            else:
                videos.append(consumer)
        recent = self.speaker.recent[: self.settings.last_n]
        everyone_high = len(self.participants) - 1 <= self.settings.last_n

        def priority(c: Consumer) -> tuple[int, int]:
            pid = c.producer.participant.id
            if pid in subscriber.visible:
                return (0, 0)
            if pid in recent:
                return (1, recent.index(pid))
            return (2, 0)

        videos.sort(key=priority)
        for consumer in videos:
            thumbnail = subscriber.thumbnails is not None and (
                consumer.producer.participant.id not in subscriber.visible
            )
            high = not thumbnail and (everyone_high or priority(consumer)[0] < 2)
            max_layer = len(consumer.producer.layers) - 1 if high else 0
            rates = consumer.producer.layer_bitrates(now)
            wanted = choose_layer(rates, float("inf"), max_layer)
            if wanted is not None:
                desired += rates[wanted] or 0.0
            layer = choose_layer(rates, budget, max_layer)
            if layer is None:  # nothing received yet: start at the layout's layer
                consumer.selector.set_target(max_layer)
                continue
            consumer.selector.set_target(layer)
            if consumer.producer.svc:  # all spatial layers, or the lowest (thumbnail, no room)
                consumer.spatial_target = 7 if high and (rates[layer] or 0.0) <= budget else 0
            if consumer.producer.temporal_layers:  # a thumbnail: the base frame rate only
                consumer.temporal_target = 0 if thumbnail else 7
            budget -= rates[layer] or 0.0
            allocated += rates[layer] or 0.0
        subscriber.desired_rate = desired
        subscriber.allocated_rate = allocated
