"""RTP packet and header extension codec: table tests, aiortc cross-checks, properties."""

from __future__ import annotations

import pytest
from aiortc import rtp as aiortc_rtp
from hypothesis import given
from hypothesis import strategies as st

from visavis.protocol.rtp import RtpError, RtpPacket, is_rtcp
from visavis.protocol.rtp.extensions import (
    abs_send_time,
    find_extension,
    parse_abs_send_time,
    parse_audio_level,
    parse_extensions,
    serialize_audio_level,
    serialize_extensions,
)
from visavis.protocol.rtp.packet import payload_offset, sequence_of, ssrc_of
from visavis.protocol.rtp.vp8 import is_vp8_keyframe

# RTP header from RFC 3550 layout: V=2, M=1, PT=96, seq 0x1234, ts 0xdeadbeef, ssrc 1.
BASIC = bytes.fromhex("80e01234deadbeef00000001") + b"payload"


def test_parse_basic() -> None:
    packet = RtpPacket.parse(BASIC)
    assert packet.payload_type == 96
    assert packet.marker
    assert packet.sequence_number == 0x1234
    assert packet.timestamp == 0xDEADBEEF
    assert packet.ssrc == 1
    assert packet.payload == b"payload"
    assert packet.serialize() == BASIC
    assert ssrc_of(BASIC) == 1 and sequence_of(BASIC) == 0x1234
    assert payload_offset(BASIC) == 12


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x60", "too short"),
        (bytes.fromhex("40601234deadbeef00000001"), "version"),
        (bytes.fromhex("8f601234deadbeef00000001"), "CSRC"),
        (bytes.fromhex("90601234deadbeef00000001bede"), "extension header"),
        (bytes.fromhex("90601234deadbeef00000001bede0002aabb"), "longer than packet"),
        (bytes.fromhex("a0601234deadbeef0000000100"), "padding"),
        (bytes.fromhex("90601234deadbeef00000001bede000134000000"), "overruns the block"),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    with pytest.raises(RtpError, match=message):
        RtpPacket.parse(data)


def test_extensions_one_byte_matches_aiortc() -> None:
    """aiortc writes mid + audio level; we read the same values, and vice versa."""
    ext_map = aiortc_rtp.HeaderExtensionsMap()
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters

    params = RTCRtpParameters(
        headerExtensions=[
            RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
            RTCRtpHeaderExtensionParameters(
                id=3, uri="urn:ietf:params:rtp-hdrext:ssrc-audio-level"
            ),
        ]
    )
    ext_map.configure(params)
    theirs = aiortc_rtp.RtpPacket(payload_type=111, sequence_number=7, timestamp=960, ssrc=42)
    theirs.extensions.mid = "0"
    theirs.extensions.audio_level = (True, 33)
    theirs.payload = b"\x01\x02"
    data = theirs.serialize(ext_map)
    ours = RtpPacket.parse(data)
    assert ours.extensions[1] == b"0"
    assert parse_audio_level(ours.extensions[3]) == (True, 33)
    assert find_extension(data, 3) == serialize_audio_level(True, 33)
    assert find_extension(data, 5) is None
    back = aiortc_rtp.RtpPacket.parse(ours.serialize(), ext_map)
    assert back.extensions.mid == "0" and back.extensions.audio_level == (True, 33)


def test_two_byte_form() -> None:
    ext = {1: b"", 20: b"x" * 20}
    block = serialize_extensions(ext)
    assert block[:2] == b"\x10\x00"
    assert parse_extensions(0x1000, block[4:]) == ext
    packet = RtpPacket(96, 1, 2, 3, extensions=ext, extension_profile=0x1000, payload=b"p")
    data = packet.serialize()
    assert RtpPacket.parse(data) == packet
    assert find_extension(data, 20) == b"x" * 20


def test_abs_send_time_roundtrip() -> None:
    assert parse_abs_send_time(abs_send_time(12.5)) == pytest.approx(12.5)
    assert parse_abs_send_time(abs_send_time(64.25)) == pytest.approx(0.25)


def test_is_rtcp() -> None:
    assert is_rtcp(bytes([0x80, 200, 0, 6]))
    assert is_rtcp(bytes([0x81, 206, 0, 2]))
    assert not is_rtcp(BASIC)


@pytest.mark.parametrize(
    ("payload", "key"),
    [
        (bytes([0x10, 0x00]), True),  # S=1, no X, frame tag P=0
        (bytes([0x10, 0x01]), False),  # interframe
        (bytes([0x00, 0x00]), False),  # not the start of a partition
        (bytes([0x90, 0x80, 0x81, 0x23, 0x00]), True),  # X, I with 15-bit picture id
        (bytes([0x90, 0xE0, 0x05, 0x07, 0x20, 0x00]), True),  # I (7-bit), L, T
        (bytes([0x90, 0x80]), False),  # truncated
        (b"", False),
    ],
)
def test_vp8_keyframe(payload: bytes, key: bool) -> None:
    assert is_vp8_keyframe(payload) is key


@given(st.binary(max_size=80))
def test_parse_never_raises_unexpected(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpError:
        return
    assert RtpPacket.parse(packet.serialize()).payload == packet.payload


@given(
    st.dictionaries(st.integers(1, 14), st.binary(min_size=1, max_size=16), max_size=5),
    st.integers(0, 0xFFFF),
    st.binary(max_size=40),
)
def test_roundtrip_property(ext: dict[int, bytes], seq: int, payload: bytes) -> None:
    packet = RtpPacket(100, seq, 5, 6, extensions=ext, payload=payload)
    assert RtpPacket.parse(packet.serialize()) == packet
