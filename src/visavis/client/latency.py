"""Where the media latency of a call goes, and the one receive-side delay we remove.

aiortc's receiver puts every RTP packet into a ``JitterBuffer`` and hands a video frame to
the decoder only when a packet of the *next* frame arrives (a change of RTP timestamp
is its only end-of-frame signal; it ignores the RTP marker bit). Every video frame thus
waits one frame interval at the receiver: 67 ms at 15 fps, 33 ms at 30 fps, the bulk of
the 69 ms the benchmark measured on a loopback-fast path.

:class:`MarkerJitterBuffer` is aiortc's buffer plus one rule: a frame whose packets are
all there from the first to the one with the marker bit (RFC 3550: the last packet of a
video frame; aiortc, libwebrtc and every browser set it) is complete at once. Frames
without a marker still complete the old way, so nothing is lost if a sender does not set
it. :func:`tune_receivers` swaps it into a peer connection's video receivers (aiortc has
no option for it; the buffer is a private attribute, set before any packet arrives).

:class:`ReceiveProbe` and :class:`SendProbe` time the pipeline of stamped test-pattern
frames (see :mod:`visavis.client.media`) so that a call can report a breakdown:

- ``queue``: capture (the stamp) to the sender pulling the frame for encoding;
- ``encode``: the encoder's own time (in aiortc's executor thread);
- ``to_first_packet``: capture to the first RTP packet of the frame at the receiver
  (queue + encode + packetize + SRTP + network);
- ``transfer``: first to last packet of the frame;
- ``jitter_wait``: last packet to the jitter buffer releasing the frame to the decoder;
- ``decode``: release to our reader holding the decoded frame (decoder thread, hand-over
  to the event loop, our track);
- ``total``: capture to decoded frame in our hands.

Audio: aiortc's audio buffer waits for 4 further 20 ms packets before releasing one
(``prefetch=4``, ~80 ms); audio carries no stamp here, so that figure is not measured and
left as aiortc sets it (it absorbs network jitter for the ear).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from av import VideoFrame

from visavis.client.media import read_stamp

VIDEO_CAPACITY = 512  # aiortc's own figure for video
STAGES = ("queue", "encode", "to_first_packet", "transfer", "jitter_wait", "decode", "total")
_KEEP = 600
_MOD40 = 2**40
_MOD32 = 2**32


class MarkerJitterBuffer(JitterBuffer):
    """aiortc's jitter buffer, completing a video frame on its marker-bit packet."""

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        origin = self._origin
        if origin is not None:
            packets: list[RtpPacket] = []
            for count in range(self._capacity):
                packet = self._packets[(origin + count) % self._capacity]
                if packet is None or (packets and packet.timestamp != packets[0].timestamp):
                    break
                packets.append(packet)
                if packet.marker:
                    frame = JitterFrame(
                        data=b"".join(p._data for p in packets),  # type: ignore[attr-defined]
                        timestamp=packet.timestamp,
                    )
                    self.remove(count + 1)
                    return frame
        return super()._remove_frame(sequence_number)


def tune_receivers(pc: RTCPeerConnection) -> int:
    """Give ``pc``'s video receivers a :class:`MarkerJitterBuffer`; returns how many."""
    tuned = 0
    for transceiver in pc.getTransceivers():
        receiver = transceiver.receiver
        if transceiver.kind != "video":
            continue
        attr = "_RTCRtpReceiver__jitter_buffer"
        current = getattr(receiver, attr, None)
        if isinstance(current, JitterBuffer) and not isinstance(current, MarkerJitterBuffer):
            setattr(receiver, attr, MarkerJitterBuffer(capacity=VIDEO_CAPACITY, is_video=True))
            tuned += 1
    return tuned


@dataclass
class _Arrival:
    first_ms: float
    last_ms: float
    released_ms: float | None = None


@dataclass
class StageTimes:
    """Per-frame stage durations (ms) of stamped frames, newest last."""

    samples: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})

    def note(self, stage: str, value: float) -> None:
        values = self.samples.setdefault(stage, [])
        values.append(value)
        if len(values) > _KEEP:
            del values[: len(values) - _KEEP]

    def medians(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for stage, values in self.samples.items():
            if values:
                ordered = sorted(values)
                out[stage] = ordered[len(ordered) // 2]
        return out


def now_ms() -> float:
    return time.time() * 1000


def _since(stamp_ms: int, at_ms: float) -> float:
    """``at_ms`` (wall clock) minus a 40-bit stamp, wrap-aware."""
    return (at_ms - stamp_ms) % _MOD40


class ReceiveProbe:
    """Records when each video frame's packets arrive and leave a receiver's jitter buffer.

    Wraps the ``add`` of the receiver's buffer (instance attribute, this receiver only).
    Decoded frames carry aiortc's mapped timestamp (RTP timestamp minus the first one
    released) as ``pts``; :meth:`stages` matches them back.
    """

    def __init__(self, receiver: Any, times: StageTimes) -> None:
        self.times = times
        self._frames: OrderedDict[int, _Arrival] = OrderedDict()
        self._origin: int | None = None
        buffer = receiver._RTCRtpReceiver__jitter_buffer
        original: Callable[[RtpPacket], tuple[bool, JitterFrame | None]] = buffer.add

        def add(packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
            at = now_ms()
            arrival = self._frames.get(packet.timestamp)
            if arrival is None:
                arrival = self._frames[packet.timestamp] = _Arrival(at, at)
                while len(self._frames) > 64:
                    self._frames.popitem(last=False)
            else:
                arrival.last_ms = at
            result = original(packet)
            frame = result[1]
            if frame is not None:
                if self._origin is None:
                    self._origin = frame.timestamp
                released = self._frames.get(frame.timestamp)
                if released is not None:
                    released.released_ms = now_ms()
            return result

        buffer.add = add

    def stages(self, frame: VideoFrame, stamp_ms: int, read_ms: float) -> None:
        """Note the stages of a decoded frame stamped at ``stamp_ms``, read at ``read_ms``."""
        self.times.note("total", _since(stamp_ms, read_ms))
        if self._origin is None or frame.pts is None:
            return
        arrival = self._frames.get((self._origin + int(frame.pts)) % _MOD32)
        if arrival is None or arrival.released_ms is None:
            return
        self.times.note("to_first_packet", _since(stamp_ms, arrival.first_ms))
        self.times.note("transfer", arrival.last_ms - arrival.first_ms)
        self.times.note("jitter_wait", arrival.released_ms - arrival.last_ms)
        self.times.note("decode", read_ms - arrival.released_ms)


def probe_receivers(
    pc: RTCPeerConnection, times: StageTimes, skip: dict[Any, Any] | None = None
) -> dict[Any, ReceiveProbe]:
    """A :class:`ReceiveProbe` on each video receiver of ``pc`` not in ``skip``."""
    probes: dict[Any, ReceiveProbe] = {}
    for transceiver in pc.getTransceivers():
        if transceiver.kind == "video" and transceiver.receiver not in (skip or {}):
            probes[transceiver.receiver] = ReceiveProbe(transceiver.receiver, times)
    return probes


class SendProbe(MediaStreamTrack):
    """A pass-through video track that times queueing and encoding of stamped frames.

    The sender calls ``recv`` right before it encodes; at that moment the time since the
    stamp is the queueing, and the previous frame's encoder call has finished (aiortc
    encodes one frame at a time), so the encoder's ``encode`` is wrapped once it exists.
    """

    kind = "video"

    def __init__(self, track: MediaStreamTrack, times: StageTimes) -> None:
        super().__init__()
        self._track = track
        self.times = times
        self.sender: Any = None
        self._wrapped = False

    async def recv(self) -> Any:
        frame = await self._track.recv()
        if isinstance(frame, VideoFrame):
            stamp = read_stamp(frame)
            if stamp is not None:
                self.times.note("queue", _since(stamp.sent_ms, now_ms()))
        if not self._wrapped and self.sender is not None:
            self._wrap_encoder()
        return frame

    def _wrap_encoder(self) -> None:
        encoder = getattr(self.sender, "_RTCRtpSender__encoder", None)
        if encoder is None:
            return
        original = encoder.encode
        times = self.times

        def encode(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                times.note("encode", 1000 * (time.perf_counter() - start))

        encoder.encode = encode
        self._wrapped = True

    def stop(self) -> None:
        super().stop()
        self._track.stop()


__all__ = [
    "STAGES",
    "MarkerJitterBuffer",
    "ReceiveProbe",
    "SendProbe",
    "StageTimes",
    "probe_receivers",
    "tune_receivers",
]
