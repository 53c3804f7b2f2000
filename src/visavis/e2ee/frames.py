"""SFrame applied to codec frames, leaving clear only what the SFU routes on (sans-I/O).

An encrypted frame is ``clear || SFrame(header || AEAD(rest))`` where ``clear`` is the
codec's routing prefix and is passed to SFrame as metadata, so it is authenticated:
changing one clear byte makes the receiver drop the frame. The receiver finds the
prefix length from the clear bytes themselves (VP8's keyframe bit), so no side channel
is needed. The table (docs/e2ee.md):

=========  ==========================  =================================================
codec      clear bytes                 why
=========  ==========================  =================================================
VP8        10 on keyframes, 3 on delta  frame tag (keyframe bit, read by the SFU to gate
                                       simulcast switches), keyframe start code and size
Opus       1                           TOC byte (mode, bandwidth, frame count)
VP9, AV1   0                           routing data is in the RTP payload descriptor /
                                       dependency descriptor, outside the frame
H.264      refused                     NAL headers would need start-code escaping of the
                                       ciphertext; not negotiated with E2EE on
=========  ==========================  =================================================
"""

from __future__ import annotations

import enum
from collections import Counter

from visavis.protocol.sframe import Context, SendKey, SFrameError, Unprotected


class Codec(enum.Enum):
    VP8 = "vp8"
    OPUS = "opus"
    VP9 = "vp9"
    AV1 = "av1"
    H264 = "h264"

    @classmethod
    def from_mime(cls, mime: str) -> Codec:
        """``video/VP8`` → VP8 (case-insensitive); ValueError for an unknown codec."""
        return cls(mime.split("/")[-1].lower())


class FrameError(SFrameError):
    """The frame is too short for its codec's clear prefix, or its codec is refused."""

    reason = "frame"


def clear_length(codec: Codec, frame: bytes) -> int:
    """How many leading bytes of ``frame`` stay in clear (same answer on both sides)."""
    if codec is Codec.VP8:
        if not frame:
            raise FrameError("empty VP8 frame")
        return 3 if frame[0] & 0x01 else 10  # P bit of the frame tag: 0 = keyframe
    if codec is Codec.OPUS:
        return 1
    if codec in (Codec.VP9, Codec.AV1):
        return 0
    raise FrameError(f"{codec.name} frames are not supported with end-to-end encryption")


def encrypt_frame(key: SendKey, codec: Codec, frame: bytes) -> bytes:
    """``clear || SFrame ciphertext`` of one encoded frame under the sender's key."""
    n = clear_length(codec, frame)
    if len(frame) < n:
        raise FrameError(f"{codec.name} frame of {len(frame)} bytes is shorter than its header")
    clear = frame[:n]
    return clear + key.protect(frame[n:], clear)


def decrypt_frame(context: Context, codec: Codec, data: bytes) -> Unprotected:
    """The plaintext frame (``clear || body``) or a typed SFrameError."""
    n = clear_length(codec, data)
    if len(data) <= n:
        raise FrameError("encrypted frame ends inside its clear prefix")
    clear = data[:n]
    result = context.unprotect(data[n:], clear)
    return Unprotected(result.kid, result.ctr, clear, clear + result.plaintext)


class FrameStats:
    """Frames encrypted, decrypted, and dropped by reason (exported as metrics)."""

    def __init__(self) -> None:
        self.encrypted = 0
        self.decrypted = 0
        self.dropped: Counter[str] = Counter()

    def drop(self, error: SFrameError) -> None:
        self.dropped[error.reason] += 1
