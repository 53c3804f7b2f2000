"""Clear bytes per codec: what the SFU reads survives encryption and is authenticated."""

from __future__ import annotations

import pytest
from aiortc.codecs.vpx import Vp8Encoder

from visavis.e2ee.frames import Codec, FrameError, clear_length, decrypt_frame, encrypt_frame
from visavis.protocol.rtp.vp8 import is_vp8_keyframe
from visavis.protocol.sframe import AuthenticationError, Context, SendKey

KEY = bytes(32)
VP8_KEY = bytes([0x50, 0x42, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00]) + b"secret" * 30
VP8_DELTA = bytes([0x31, 0x07, 0x00]) + b"secret" * 30
OPUS = bytes([0x78]) + b"secret" * 10


def pair() -> tuple[SendKey, Context]:
    receiver = Context()
    receiver.add_key(5, KEY)
    return SendKey(5, KEY), receiver


@pytest.mark.parametrize(
    ("codec", "frame", "clear"),
    [
        (Codec.VP8, VP8_KEY, 10),
        (Codec.VP8, VP8_DELTA, 3),
        (Codec.OPUS, OPUS, 1),
        (Codec.VP9, b"secret" * 5, 0),
    ],
)
def test_clear_prefix_kept_rest_encrypted(codec: Codec, frame: bytes, clear: int) -> None:
    sender, receiver = pair()
    data = encrypt_frame(sender, codec, frame)
    assert clear_length(codec, frame) == clear
    assert data[:clear] == frame[:clear] and b"secret" not in data
    if clear:
        altered = bytearray(data)
        altered[clear - 1] ^= 0x04  # a clear byte the SFU could try to change
        with pytest.raises(AuthenticationError):
            decrypt_frame(receiver, codec, bytes(altered))
    assert decrypt_frame(receiver, codec, data).plaintext == frame


@pytest.mark.parametrize(("frame", "keyframe"), [(VP8_KEY, True), (VP8_DELTA, False)])
def test_sfu_still_sees_the_vp8_keyframe_bit(frame: bytes, keyframe: bool) -> None:
    sender, _ = pair()
    packets = Vp8Encoder._packetize(encrypt_frame(sender, Codec.VP8, frame), 1234)
    assert is_vp8_keyframe(packets[0]) is keyframe


def test_refused_frames() -> None:
    sender, receiver = pair()
    with pytest.raises(FrameError):  # AV1 and H.264 keep units, not a prefix, clear
        clear_length(Codec.H264, b"\x00\x00\x01\x65" + b"x" * 20)
    with pytest.raises(FrameError):
        encrypt_frame(sender, Codec.VP8, VP8_KEY[:5])
    with pytest.raises(FrameError):
        decrypt_frame(receiver, Codec.VP8, VP8_DELTA[:3])
    with pytest.raises(FrameError):
        decrypt_frame(receiver, Codec.VP8, b"")
    assert Codec.from_mime("video/VP8") is Codec.VP8
