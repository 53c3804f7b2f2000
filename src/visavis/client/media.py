"""Media for calls: a test pattern that carries its own capture time, a tone, files, devices.

The test pattern writes a 64-bit stamp into the top of every video frame as a grid of
black and white blocks (16 blocks per row, 4 rows): 40 bits of wall-clock milliseconds,
16 bits of frame number and an 8-bit checksum. The blocks are large and high-contrast, so
they survive VP8 at any bitrate aiortc picks; the receiver reads them back from the decoded
frame (:func:`read_stamp`) and so measures capture-to-decode latency per frame. Sender and
receiver must share a clock (same machine, or NTP-synchronised machines).

:func:`encode_stamp` / :func:`decode_stamp` are pure functions on luma bytes; the tracks
around them only add timing.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, VideoFrame

VIDEO_CLOCK = 90_000
AUDIO_RATE = 48_000
AUDIO_PTIME = 0.020
STAMP_COLUMNS = 16
STAMP_ROWS = 4
STAMP_BITS = STAMP_COLUMNS * STAMP_ROWS
BLACK, WHITE = 16, 235


@dataclass(frozen=True)
class Stamp:
    """What the test pattern wrote into one frame."""

    sent_ms: int  # wall-clock milliseconds modulo 2**40
    frame: int  # frame number modulo 2**16


def _checksum(value: int) -> int:
    total = 0x5A
    for shift in range(0, 56, 8):
        total = (total * 31 + ((value >> shift) & 0xFF)) & 0xFF
    return total


def stamp_bits(stamp: Stamp) -> int:
    """The 64-bit word written into a frame."""
    value = ((stamp.sent_ms & (2**40 - 1)) << 16) | (stamp.frame & 0xFFFF)
    return (value << 8) | _checksum(value)


def block_size(width: int) -> int:
    return max(2, width // STAMP_COLUMNS)


def encode_stamp(luma: bytearray, width: int, height: int, stride: int, stamp: Stamp) -> None:
    """Draw ``stamp`` as black/white blocks into the top rows of a luma plane."""
    size = block_size(width)
    if STAMP_ROWS * size > height:
        raise ValueError(f"a {width}x{height} frame is too small for a stamp")
    word = stamp_bits(stamp)
    for index in range(STAMP_BITS):
        bit = (word >> (STAMP_BITS - 1 - index)) & 1
        value = bytes([WHITE if bit else BLACK]) * size
        row, col = divmod(index, STAMP_COLUMNS)
        for y in range(row * size, (row + 1) * size):
            start = y * stride + col * size
            luma[start : start + size] = value


def decode_stamp(luma: bytes, width: int, height: int, stride: int) -> Stamp | None:
    """Read a stamp back; None when the frame carries none (or it did not survive)."""
    size = block_size(width)
    if STAMP_ROWS * size > height or len(luma) < stride * STAMP_ROWS * size:
        return None
    word = 0
    quarter = max(1, size // 4)
    for index in range(STAMP_BITS):
        row, col = divmod(index, STAMP_COLUMNS)
        cy, cx = row * size + size // 2, col * size + size // 2
        total = 0
        for dy, dx in ((0, 0), (-quarter, -quarter), (quarter, quarter), (-quarter, quarter),
                       (quarter, -quarter)):
            total += luma[(cy + dy) * stride + cx + dx]
        word = (word << 1) | (1 if total > 5 * 128 else 0)
    value, check = word >> 8, word & 0xFF
    if _checksum(value) != check:
        return None
    return Stamp(sent_ms=value >> 16, frame=value & 0xFFFF)


def read_stamp(frame: VideoFrame) -> Stamp | None:
    """The stamp in a decoded video frame, if it has one."""
    plane = frame.planes[0]
    return decode_stamp(bytes(plane), frame.width, frame.height, plane.line_size)


def wall_ms() -> int:
    return int(time.time() * 1000) & (2**40 - 1)


def latency_ms(stamp: Stamp, now_ms: int | None = None) -> int:
    """Milliseconds between the stamp's capture time and ``now_ms`` (wrap-aware)."""
    now = wall_ms() if now_ms is None else now_ms
    return (now - stamp.sent_ms) % (2**40)


class TestPatternTrack(MediaStreamTrack):
    """Video: a moving gradient with a capture-time stamp in every frame."""

    kind = "video"
    __test__ = False  # not a pytest test class

    def __init__(self, width: int = 320, height: int = 240, fps: int = 15) -> None:
        super().__init__()
        if width % 2 or height % 2 or STAMP_ROWS * block_size(width) > height:
            raise ValueError("the test pattern needs an even size with height >= width / 4")
        self.width, self.height, self.fps = width, height, fps
        self._count = 0
        self._start: float | None = None
        self._chroma = bytes([128]) * ((width // 2) * (height // 2))

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._count / self.fps
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = self.frame_at(self._count)
        self._count += 1
        return frame

    def frame_at(self, index: int, sent_ms: int | None = None) -> VideoFrame:
        """Frame number ``index``, stamped with ``sent_ms`` (default: now)."""
        frame = VideoFrame(self.width, self.height, "yuv420p")
        stride = frame.planes[0].line_size
        luma = bytearray(stride * self.height)
        shift = (index * 4) % 256
        row = bytes((x + shift) % 200 + 28 for x in range(stride))
        for y in range(self.height):
            luma[y * stride : (y + 1) * stride] = row
        stamp = Stamp(wall_ms() if sent_ms is None else sent_ms, index)
        encode_stamp(luma, self.width, self.height, stride, stamp)
        frame.planes[0].update(bytes(luma))
        for plane in frame.planes[1:]:
            plane.update(self._plane_bytes(plane.line_size, plane.height))
        frame.pts = int(index * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return frame

    def _plane_bytes(self, stride: int, height: int) -> bytes:
        if stride == self.width // 2:
            return self._chroma
        return bytes([128]) * (stride * height)


class ToneTrack(MediaStreamTrack):
    """Audio: a quiet 440 Hz sine, 48 kHz mono, 20 ms frames."""

    kind = "audio"

    def __init__(self, frequency: float = 440.0) -> None:
        super().__init__()
        self._samples = int(AUDIO_RATE * AUDIO_PTIME)
        self._count = 0
        self._start: float | None = None
        step = 2 * math.pi * frequency / AUDIO_RATE
        period = AUDIO_RATE // math.gcd(int(frequency), AUDIO_RATE)
        wave = [int(3000 * math.sin(step * i)) for i in range(period)]
        self._wave = b"".join(v.to_bytes(2, "little", signed=True) for v in wave)
        self._period = period

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._count * AUDIO_PTIME
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        offset = (self._count * self._samples) % self._period
        data = (self._wave * (2 + self._samples // self._period))[
            2 * offset : 2 * (offset + self._samples)
        ]
        frame = AudioFrame(format="s16", layout="mono", samples=self._samples)
        frame.planes[0].update(data)
        frame.sample_rate = AUDIO_RATE
        frame.pts = self._count * self._samples
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self._count += 1
        return frame


@dataclass
class MediaSource:
    """What a call sends: an audio and/or a video track, and how to release them."""

    audio: MediaStreamTrack | None = None
    video: MediaStreamTrack | None = None
    _closers: list[Callable[[], Any]] = field(default_factory=list)

    def close(self) -> None:
        for track in (self.audio, self.video):
            if track is not None:
                track.stop()
        for closer in self._closers:
            closer()
        self._closers.clear()

    @classmethod
    def test_pattern(
        cls, width: int = 320, height: int = 240, fps: int = 15, audio: bool = True
    ) -> MediaSource:
        """Stamped test-pattern video (for latency measurement) and a tone."""
        return cls(audio=ToneTrack() if audio else None, video=TestPatternTrack(width, height, fps))

    @classmethod
    def file(cls, path: str | Path, *, loop: bool = True) -> MediaSource:
        """Audio and video of a media file (anything FFmpeg reads), looped by default."""
        if not Path(path).exists():
            raise FileNotFoundError(f"no media file at {path}")
        player = MediaPlayer(str(path), loop=loop)
        return cls(audio=player.audio, video=player.video)

    @classmethod
    def devices(
        cls,
        camera: str | None = "/dev/video0",
        microphone: str | None = "default",
        *,
        camera_format: str = "v4l2",
        microphone_format: str = "pulse",
        size: str = "640x480",
    ) -> MediaSource:
        """A camera (V4L2) and a microphone (PulseAudio, or ``microphone_format="alsa"``)."""
        source = cls()
        if camera:
            video = MediaPlayer(camera, format=camera_format, options={"video_size": size})
            source.video = video.video
        if microphone:
            audio = MediaPlayer(microphone, format=microphone_format)
            source.audio = audio.audio
        return source

    @classmethod
    def none(cls) -> MediaSource:
        """Receive only."""
        return cls()
