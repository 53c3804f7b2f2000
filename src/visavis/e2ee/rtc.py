"""SFrame on aiortc senders and receivers (aiortc has no encoded-transform hook).

Sending: aiortc encodes and packetizes in ``RTCRtpSender._next_encoded_frame``; we wrap
that method per sender, take the frame back out of its packets (VP8: strip the payload
descriptors; H.264: depacketize to Annex B; Opus: one packet), encrypt it, and
packetize it again. aiortc still
computes the RFC 6464 audio level from the raw samples, so the SFU's speaker
detection keeps working. Receiving: the receiver hands each reassembled frame to its
decoder thread through the private queue ``_RTCRtpReceiver__decoder_queue``; we replace
it (before the thread starts) with one that decrypts on ``put`` and drops, counts and
asks for a keyframe (PLI) when a frame cannot be decrypted. tests/e2ee/test_rtc.py fails
if aiortc renames either hook.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.codecs.h264 import H264Encoder, H264PayloadDescriptor
from aiortc.codecs.vpx import Vp8Encoder, VpxPayloadDescriptor

from visavis.e2ee.frames import Codec, FrameError
from visavis.e2ee.ratchet import Keyring

SENDER_HOOK = "_next_encoded_frame"
RECEIVER_QUEUE = "_RTCRtpReceiver__decoder_queue"
RECEIVER_ERROR = "_RTCRtpReceiver__decoder_error"


def _codec(parameters: Any) -> Codec | None:
    try:
        return Codec.from_mime(parameters.mimeType)
    except ValueError:
        return None


def encrypt_sender(sender: RTCRtpSender, keyring: Keyring) -> None:
    """Encrypt every frame ``sender`` sends with ``keyring``'s current sending key."""
    original: Callable[[Any], Awaitable[Any]] = getattr(sender, SENDER_HOOK)

    async def next_encoded_frame(codec: Any) -> Any:
        frame = await original(codec)
        if frame is None or not frame.payloads:
            return frame
        kind = _codec(codec)
        try:
            if kind is Codec.VP8:
                parts = [VpxPayloadDescriptor.parse(p) for p in frame.payloads]
                body = b"".join(data for _, data in parts)
                picture_id = parts[0][0].picture_id or 0
                encrypted = keyring.encrypt(kind, body)
                frame.payloads = Vp8Encoder._packetize(encrypted, picture_id)
            elif kind is Codec.H264:
                annex_b = b"".join(H264PayloadDescriptor.parse(p)[1] for p in frame.payloads)
                encrypted = keyring.encrypt(kind, annex_b)
                frame.payloads = H264Encoder._packetize(H264Encoder._split_bitstream(encrypted))
            elif kind is Codec.OPUS:
                frame.payloads = [keyring.encrypt(kind, p) for p in frame.payloads]
            else:
                raise FrameError(f"{codec.mimeType} cannot be sent end-to-end encrypted")
        except (FrameError, ValueError) as error:
            keyring.stats.dropped[getattr(error, "reason", "frame")] += 1
            return None  # never send a frame in clear
        return frame

    setattr(sender, SENDER_HOOK, next_encoded_frame)


class _DecryptingQueue(queue.Queue[Any]):
    """The decoder thread's input: frames are decrypted on the way in, or dropped."""

    def __init__(self, keyring: Keyring, error: threading.Event | None, video: bool) -> None:
        super().__init__()
        self.keyring = keyring
        self.error = error
        self.video = video

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is not None:
            codec, encoded = item
            kind = _codec(codec)
            plain = self.keyring.decrypt(kind, encoded.data) if kind is not None else None
            if plain is None:
                if kind is None:
                    self.keyring.stats.dropped["codec"] += 1
                if self.video and self.error is not None:
                    self.error.set()  # the receiver sends a PLI on its next packet
                return
            encoded.data = plain
        super().put(item, block, timeout)


def decrypt_receiver(receiver: RTCRtpReceiver, keyring: Keyring, kind: str) -> None:
    """Decrypt every frame ``receiver`` gets before it reaches the decoder.

    Call it before the transceiver is negotiated (the decoder thread takes the queue
    when it starts).
    """
    if not hasattr(receiver, RECEIVER_QUEUE):
        raise RuntimeError("aiortc's receiver has no decoder queue: the E2EE hook needs updating")
    error = getattr(receiver, RECEIVER_ERROR, None)
    setattr(receiver, RECEIVER_QUEUE, _DecryptingQueue(keyring, error, kind == "video"))
