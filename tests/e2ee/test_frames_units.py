"""The unit layouts of AV1 and H.264 under SFrame (e2ee/frames.py and web/e2ee/frames.js):
the encrypted frame is still a well-formed sequence of OBUs / NAL units whose headers
(and an H.264 slice's first header bytes, SPS and PPS) stay clear and authenticated,
no start code appears inside an encrypted slice, the SFU's keyframe tests still answer
from the packetized result, and the browser's module produces the same bytes as the
Python one (Node runs it with the same key and counter)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from aiortc.codecs.h264 import H264Encoder
from hypothesis import given
from hypothesis import strategies as st

from visavis.e2ee.frames import (
    Codec,
    FrameError,
    _escape,
    _unescape,
    av1_join,
    av1_units,
    decrypt_frame,
    encrypt_frame,
    frame_kid,
    h264_join,
    h264_units,
)
from visavis.protocol.rtp.h264 import is_h264_keyframe, nal_types
from visavis.protocol.sframe import AuthenticationError, Context, SendKey, SFrameError

KEY = bytes(range(32))
KID = 0x1234501

# AV1: temporal delimiter, sequence header, a frame OBU with an extension byte, and a
# last tile group OBU without a size field.
SEQ = b"seqheader!!"
FRAME = b"secret" * 40
TILES = b"moresecret" * 9
AV1_FRAME = (
    b"\x12\x00"
    + b"\x0a"
    + bytes((len(SEQ),))
    + SEQ
    + b"\x36\x08"
    + bytes((len(FRAME) & 0x7F | 0x80, len(FRAME) >> 7))
    + FRAME
    + b"\x20"
    + TILES
)
# H.264: SPS, PPS, an IDR slice (plaintext with an emulation-prevention byte), a second
# (non-IDR) slice, with 4- and 3-byte start codes.
SPS = b"\x67\x42\xe0\x1f\xda\x02\x80\xbf\xe5"
PPS = b"\x68\xce\x3c\x80"
IDR = b"\x65\x88\x84" + b"secret" * 30 + b"\x00\x00\x03\x01" + b"secret" * 10
SLICE = b"\x41\x9a\x02" + b"moresecret" * 12
H264_FRAME = b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x00\x01" + PPS + b"\x00\x00\x01" + IDR
H264_FRAME += b"\x00\x00\x01" + SLICE


def pair() -> tuple[SendKey, Context]:
    context = Context()
    context.add_key(KID, KEY)
    return SendKey(KID, KEY), context


def test_av1_obus_stay_obus_headers_clear() -> None:
    sender, receiver = pair()
    data = encrypt_frame(sender, Codec.AV1, AV1_FRAME)
    assert b"secret" not in data and SEQ not in data
    units = av1_units(data)
    # the temporal delimiter is dropped (the RTP packetizer drops it too); the others
    # keep their headers (size-field bit normalised, extension byte kept)
    assert [clear for clear, _ in units] == [b"\x08", b"\x34\x08", b"\x20"]
    result = decrypt_frame(receiver, Codec.AV1, data)
    assert result.kid == KID and frame_kid(Codec.AV1, data) == KID
    assert av1_units(result.plaintext) == [(b"\x08", SEQ), (b"\x34\x08", FRAME), (b"\x20", TILES)]


def test_h264_nal_units_stay_nal_units_parameter_sets_clear() -> None:
    sender, receiver = pair()
    data = encrypt_frame(sender, Codec.H264, H264_FRAME)
    assert b"secret" not in data
    assert SPS in data and PPS in data  # the receiving browser parses them
    nals = [clear for clear, _ in h264_units(data, True)]
    assert nals == [SPS, PPS, IDR[:3], SLICE[:3]]
    # packetized as aiortc (like Chromium) does it, the SFU still finds the keyframe
    packets = H264Encoder._packetize(H264Encoder._split_bitstream(data))
    assert is_h264_keyframe(packets[0]) and nal_types(packets[0])[0] == 7
    plain = decrypt_frame(receiver, Codec.H264, data).plaintext
    assert h264_units(plain) == h264_units(H264_FRAME)


@pytest.mark.parametrize("codec", [Codec.AV1, Codec.H264])
def test_changed_clear_bytes_or_moved_payload_bytes_are_rejected(codec: Codec) -> None:
    sender, receiver = pair()
    frame = AV1_FRAME if codec is Codec.AV1 else H264_FRAME
    data = encrypt_frame(sender, codec, frame)
    header_byte = data.index(b"\x36\x08" if codec is Codec.AV1 else IDR[:3])  # as written
    altered = bytearray(data)
    altered[header_byte + 1] ^= 0x01  # the OBU extension byte / the slice header
    with pytest.raises(AuthenticationError):
        decrypt_frame(receiver, codec, bytes(altered))
    if codec is Codec.AV1:
        # move one ciphertext byte from the frame OBU to the tile group OBU
        units = av1_units(data)
        (c0, p0), (c1, p1), (c2, p2) = units
        moved = [(c0, p0), (c1, p1[:-1]), (c2, p1[-1:] + p2)]
        with pytest.raises(AuthenticationError):
            decrypt_frame(receiver, codec, av1_join(moved, True))
    assert decrypt_frame(receiver, codec, data).kid == KID


def test_refused_frames() -> None:
    sender, receiver = pair()
    with pytest.raises(FrameError):
        encrypt_frame(sender, Codec.H264, b"\x65\x88" + b"no start code")
    with pytest.raises(FrameError):
        encrypt_frame(sender, Codec.H264, b"\x00\x00\x01" + SPS)  # nothing to encrypt
    with pytest.raises(FrameError):
        encrypt_frame(sender, Codec.AV1, b"\x0a\x20" + SEQ)  # OBU overruns the frame
    with pytest.raises(FrameError):
        encrypt_frame(sender, Codec.AV1, b"\x12\x00")  # temporal delimiter only
    data = encrypt_frame(sender, Codec.H264, H264_FRAME)
    with pytest.raises(FrameError):  # the escaped slice lost its end marker
        decrypt_frame(receiver, Codec.H264, data[:-1] + b"\x81")


@pytest.mark.parametrize(
    ("plain", "escaped"),
    [
        (b"\x00\x00\x00", b"\x00\x00\x03\x00\x80"),
        (b"\x00\x00\x01\x00\x00\x02", b"\x00\x00\x03\x01\x00\x00\x03\x02\x80"),
        (b"\x00\x00\x03", b"\x00\x00\x03\x03\x80"),
        (b"\x00\x00\x04\x00", b"\x00\x00\x04\x00\x80"),
        (b"\x00\x00\x00\x00\x01", b"\x00\x00\x03\x00\x00\x03\x01\x80"),
        (b"\x00\x00", b"\x00\x00\x80"),
        (b"", b"\x80"),
    ],
)
def test_escape_vectors(plain: bytes, escaped: bytes) -> None:
    assert _escape(plain) == escaped
    assert _unescape(escaped) == plain


@given(st.binary(max_size=64).map(lambda b: b.replace(b"\x07", b"\x00")))
def test_escape_round_trip_never_emulates_a_start_code(data: bytes) -> None:
    escaped = _escape(data)
    assert b"\x00\x00\x01" not in escaped and b"\x00\x00\x00" not in escaped
    assert escaped[-1] == 0x80 and _unescape(escaped) == data


@given(st.binary(max_size=80))
def test_arbitrary_bytes_decrypt_to_a_typed_error(data: bytes) -> None:
    _, receiver = pair()
    for codec in (Codec.AV1, Codec.H264):
        try:
            decrypt_frame(receiver, codec, data)
        except SFrameError as error:  # frame, header, truncated, unknown_kid, auth
            assert error.reason


def test_browser_module_makes_the_same_bytes() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing: scripts/setup installs it with the web packages")
    sender, receiver = pair()
    cases = [(Codec.AV1, AV1_FRAME), (Codec.H264, H264_FRAME)] * 2
    python_sealed = [encrypt_frame(sender, codec, frame) for codec, frame in cases]
    sealed_by_codec = [(c, d) for (c, _), d in zip(cases, python_sealed, strict=True)]
    joins = [(IDR[:3], b"\x00\x00\x00\x00\x01secret\x00\x00")]
    request = {
        "key": KEY.hex(),
        "kid": KID,
        "encrypt": [{"codec": c.value, "frame": f.hex()} for c, f in cases],
        "decrypt": [{"codec": c.value, "data": d.hex()} for c, d in sealed_by_codec]
        + [{"codec": "h264", "data": python_sealed[1][:-1].hex() + "81"}],
        "join": [[c.hex(), p.hex()] for c, p in joins],
    }
    script = Path(__file__).parent / "frames_interop.mjs"
    result = subprocess.run(
        [node, str(script)], input=json.dumps(request), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout)
    # same key, same counters: byte-identical ciphertexts
    assert [bytes.fromhex(h) for h in out["encrypted"]] == python_sealed
    expected = [decrypt_frame(receiver, c, d).plaintext.hex() for c, d in sealed_by_codec]
    assert out["decrypted"] == [*expected, "!frame"]
    assert out["kids"][:4] == [str(KID)] * 4
    assert out["joined"] == [h264_join(joins, True).hex()]
    assert [[(bytes.fromhex(c), bytes.fromhex(p)) for c, p in s] for s in out["split"]] == [joins]
