"""Keyframe and layer detection per video codec, on hand-built RTP payloads: VP9 payload
descriptor, H.264 NAL units (single, STAP-A, FU-A), AV1 aggregation header and the
dependency descriptor header extension (built bit by bit as its appendix A writes it)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from visavis.protocol.rtp.av1 import (
    dd_starts_keyframe,
    is_av1_keyframe,
    parse_dependency_descriptor,
)
from visavis.protocol.rtp.errors import RtpError
from visavis.protocol.rtp.h264 import is_h264_keyframe, nal_types
from visavis.protocol.rtp.keyframes import LayerInfo, VideoCodec, is_keyframe, layer_info
from visavis.protocol.rtp.vp8 import vp8_temporal_id
from visavis.protocol.rtp.vp9 import is_vp9_keyframe, parse_vp9_descriptor

# -- VP9 (RFC 9628 s4.2) -------------------------------------------------------------
PIC, PRED, LAY, FLEX, BEG, END, SS = 0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02


@pytest.mark.parametrize(
    ("payload", "key"),
    [
        (bytes((PIC | LAY | BEG | END | SS, 0x05, 0x00, 0x07)) + b"frame", True),  # 7-bit id
        (bytes((PIC | LAY | BEG | SS, 0x81, 0x23, 0x00, 0x07)), True),  # 15-bit picture id
        (bytes((BEG | SS,)) + b"frame", True),  # no picture id, no layer indices
        (bytes((PIC | LAY | PRED | BEG | END, 0x05, 0x00, 0x07)), False),  # inter-predicted
        (bytes((PIC | LAY | END | SS, 0x05, 0x00, 0x07)), False),  # not the start of the frame
        (bytes((PIC | LAY | BEG | END, 0x05, 0x02 | 0x01, 0x07)), False),  # SID 1 (upper layer)
        (bytes((PIC | LAY | BEG,)), False),  # truncated inside the picture id
        (bytes((PIC | LAY | BEG, 0x05)), False),  # truncated inside the layer indices
        (b"", False),
    ],
)
def test_vp9_keyframe(payload: bytes, key: bool) -> None:
    assert is_vp9_keyframe(payload) is key
    assert is_keyframe(VideoCodec.VP9, payload) is key


def test_vp9_layer_indices() -> None:
    # TID 2, U, SID 1, D; flexible mode (no TL0PICIDX)
    layer = (2 << 5) | 0x10 | (1 << 1) | 1
    d = parse_vp9_descriptor(bytes((PIC | PRED | LAY | FLEX | END, 0x12, layer)))
    assert (d.temporal, d.switching_up, d.spatial, d.inter_layer) == (2, True, 1, True)
    assert d.end and not d.start and d.predicted and not d.keyframe
    with pytest.raises(RtpError):
        parse_vp9_descriptor(b"")


# -- H.264 (RFC 6184) ------------------------------------------------------------------
SPS, PPS, IDR, SLICE = b"\x67\x42\xe0\x1f\xaa", b"\x68\xce\x3c\x80", b"\x65\x88\x84", b"\x41\x9a"


def stap_a(*nals: bytes) -> bytes:
    return b"\x78" + b"".join(len(n).to_bytes(2, "big") + n for n in nals)


@pytest.mark.parametrize(
    ("payload", "types", "key"),
    [
        (IDR, [5], True),
        (SPS, [7], True),
        (PPS, [8], False),
        (SLICE, [1], False),
        (stap_a(SPS, PPS), [7, 8], True),
        (stap_a(SPS, PPS, IDR), [7, 8, 5], True),
        (stap_a(PPS, SLICE), [8, 1], False),
        (stap_a(SPS)[:-2], [], False),  # the aggregated unit overruns: nothing read
        (b"\x7c\x85" + b"idr", [5], True),  # FU-A, S bit, IDR
        (b"\x7c\x05" + b"idr", [], False),  # FU-A continuation
        (b"\x7c\x45" + b"idr", [], False),  # FU-A end
        (b"\x7c\x81" + b"slice", [1], False),  # FU-A start of a non-IDR slice
        (b"\x7c", [], False),
        (b"\x7f\x00", [], False),  # reserved type 31
        (b"", [], False),
    ],
)
def test_h264_keyframe(payload: bytes, types: list[int], key: bool) -> None:
    assert nal_types(payload) == types
    assert is_h264_keyframe(payload) is key
    assert is_keyframe(VideoCodec.H264, payload) is key


# -- AV1 -----------------------------------------------------------------------------------
def test_av1_aggregation_header_n_bit() -> None:
    assert is_av1_keyframe(b"\x18obu")  # W=1, N=1
    assert not is_av1_keyframe(b"\x10obu")
    assert not is_av1_keyframe(b"")
    assert is_keyframe(VideoCodec.AV1, b"\x18obu")


class Bits:
    """Writes fields as the dependency descriptor's syntax reads them (f(n), ns(n))."""

    def __init__(self) -> None:
        self.bits: list[int] = []

    def f(self, n: int, value: int) -> Bits:
        self.bits += [(value >> (n - 1 - i)) & 1 for i in range(n)]
        return self

    def ns(self, n: int, value: int) -> Bits:
        w = n.bit_length()
        m = (1 << w) - n
        if value < m:
            return self.f(w - 1, value)
        return self.f(w - 1, (value + m) >> 1).f(1, (value + m) & 1)

    def bytes(self) -> bytes:
        padded = self.bits + [0] * (-len(self.bits) % 8)
        return bytes(int("".join(map(str, padded[i : i + 8])), 2) for i in range(0, len(padded), 8))


def mandatory(bits: Bits, start: int, end: int, template: int, frame: int) -> Bits:
    return bits.f(1, start).f(1, end).f(6, template).f(16, frame)


def l1t3_keyframe() -> bytes:
    """Keyframe of an L1T3 stream: 5 templates (T0, T0, T1, T2, T2), 3 decode targets,
    one chain, 640x360; template ids start at 60 (offset), this frame uses 60."""
    b = mandatory(Bits(), 1, 1, 60, 1000)
    b.f(1, 1).f(1, 0).f(1, 0).f(1, 0).f(1, 0)  # structure present, no custom fields
    b.f(6, 60).f(5, 2)  # template_id_offset, dt_cnt_minus_one
    for idc in (0, 1, 1, 0, 3):  # template_layers
        b.f(2, idc)
    for _ in range(5 * 3):  # template_dtis
        b.f(2, 2)
    for fdiffs in ([], [4], [2], [1], [1, 3]):  # template_fdiffs
        for fdiff in fdiffs:
            b.f(1, 1).f(4, fdiff - 1)
        b.f(1, 0)
    b.ns(4, 1)  # chain_cnt = 1
    for _ in range(3):
        b.ns(1, 0)  # decode_target_protected_by: 0 bits each
    for _ in range(5):
        b.f(4, 0)  # template_chain_fdiff
    b.f(1, 1).f(16, 639).f(16, 359)  # render resolutions
    return b.bytes()


def test_dependency_descriptor_keyframe_structure_and_later_frames() -> None:
    value = l1t3_keyframe()
    assert dd_starts_keyframe(value)
    key = parse_dependency_descriptor(value)
    assert key.keyframe and key.start_of_frame and key.end_of_frame
    assert key.frame_number == 1000
    structure = key.structure
    assert structure is not None
    assert structure.template_id_offset == 60 and structure.decode_targets == 3
    assert structure.temporal_ids == (0, 0, 1, 2, 2)
    assert structure.spatial_ids == (0,) * 5 and structure.max_spatial_id == 0
    assert structure.resolutions == ((640, 360),)
    assert (key.spatial_id, key.temporal_id) == (0, 0)
    # A later delta frame: 3 mandatory bytes, template 63 (index 3: T2), frame 1003.
    delta = mandatory(Bits(), 1, 0, 63, 1003).bytes()
    assert len(delta) == 3 and not dd_starts_keyframe(delta)
    parsed = parse_dependency_descriptor(delta, structure)
    assert not parsed.keyframe and parsed.structure is None
    assert (parsed.spatial_id, parsed.temporal_id, parsed.frame_number) == (0, 2, 1003)
    # Without the structure in force the layers are unknown; a bad template is refused.
    assert parse_dependency_descriptor(delta).temporal_id is None
    with pytest.raises(RtpError):
        parse_dependency_descriptor(mandatory(Bits(), 1, 0, 10, 1).bytes(), structure)
    # The extension decides over the payload when the packet has one.
    assert is_keyframe(VideoCodec.AV1, b"\x10obu", value)
    assert not is_keyframe(VideoCodec.AV1, b"\x18obu", delta)


def test_dependency_descriptor_spatial_layers() -> None:
    b = mandatory(Bits(), 1, 0, 0, 7).f(1, 1).f(4, 0)
    b.f(6, 0).f(5, 1)  # offset 0, 2 decode targets
    b.f(2, 2).f(2, 3)  # templates: S0, S1
    b.f(2 * 2 * 2, 0)  # dtis
    b.f(1, 0).f(1, 0)  # no fdiffs
    b.ns(3, 0)  # no chains
    b.f(1, 0)  # no resolutions
    structure = parse_dependency_descriptor(b.bytes()).structure
    assert structure is not None and structure.spatial_ids == (0, 1)
    upper = parse_dependency_descriptor(mandatory(Bits(), 1, 1, 1, 7).bytes(), structure)
    assert (upper.spatial_id, upper.temporal_id) == (1, 0)


@pytest.mark.parametrize("value", [b"", b"\x80\x00", l1t3_keyframe()[:6]])
def test_dependency_descriptor_truncated(value: bytes) -> None:
    with pytest.raises(RtpError):
        parse_dependency_descriptor(value)


@given(st.binary(max_size=40))
def test_dependency_descriptor_never_raises_anything_else(value: bytes) -> None:
    with contextlib.suppress(RtpError):
        parse_dependency_descriptor(value)


def test_codec_names() -> None:
    assert VideoCodec.from_name("video/H264") is VideoCodec.H264
    assert VideoCodec.from_name("av1") is VideoCodec.AV1
    with pytest.raises(ValueError):
        VideoCodec.from_name("hevc")


@pytest.mark.parametrize(
    ("payload", "tid"),
    [
        (b"\x10\x00", 0),  # no X: no temporal index
        (b"\x90\x20\x80\x00", 2),  # X, T: TID byte 10......
        (b"\x90\xe0\x81\x23\x05\x40\x00", 1),  # I (15-bit), L, T
        (b"\x90\x10\x40\x00", 0),  # K only: no temporal index
        (b"\x90\x20", None),  # truncated before the TID byte
        (b"\x90", None),
        (b"", None),
    ],
)
def test_vp8_temporal_id(payload: bytes, tid: int | None) -> None:
    assert vp8_temporal_id(payload) == tid


def test_layer_info() -> None:
    key = layer_info(VideoCodec.VP8, b"\x90\x20\x00\x00\x9d\x01\x2a")
    assert key == LayerInfo(0, 0, True, False, True)
    assert layer_info(VideoCodec.VP8, b"\x80\x20\xc0\x01") == LayerInfo(0, 3, False, False, False)
    upper = bytes((PIC | LAY | BEG | END, 0x05, (1 << 5) | (2 << 1) | 1, 0x07))
    assert layer_info(VideoCodec.VP9, upper) == LayerInfo(2, 1, False, True, False)
    base = bytes((PIC | LAY | BEG | SS, 0x05, 0x00, 0x07))
    assert layer_info(VideoCodec.VP9, base) == LayerInfo(0, 0, True, False, True)
    assert layer_info(VideoCodec.VP9, b"\xa0\x05") is None
    assert layer_info(VideoCodec.H264, b"\x65") is None
