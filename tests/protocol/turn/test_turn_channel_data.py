"""ChannelData codec and the TCP/TLS stream framer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from visavis.protocol.stun import MessageClass, Method, encode_message
from visavis.protocol.turn import (
    ChannelDataError,
    FramingError,
    StreamFramer,
    encode_channel_data,
    parse_channel_data,
)


def test_channel_data_round_trip_and_padding() -> None:
    assert encode_channel_data(0x4001, b"abc") == b"\x40\x01\x00\x03abc"
    assert encode_channel_data(0x4001, b"abc", pad=True) == b"\x40\x01\x00\x03abc\x00"
    assert parse_channel_data(b"\x40\x01\x00\x03abc\x00") == (0x4001, b"abc")
    for bad in (b"\x40\x01\x00", b"\x40\x01\x00\x09abc", b"\x3f\xff\x00\x00", b"\x7f\xff\x00\x00"):
        with pytest.raises(ChannelDataError):
            parse_channel_data(bad)


def test_framer_splits_mixed_stream_byte_by_byte() -> None:
    stun = encode_message(Method.BINDING, MessageClass.REQUEST, b"\x01" * 12, [])
    stream = (
        encode_channel_data(0x4000, b"hello", pad=True)
        + stun
        + encode_channel_data(0x4002, b"", pad=True)
    )
    framer = StreamFramer()
    frames: list[bytes] = []
    for i in range(len(stream)):
        frames += framer.feed(stream[i : i + 1])
    assert frames == [encode_channel_data(0x4000, b"hello", pad=True), stun, b"\x40\x02\x00\x00"]
    assert framer.buffered == 0


def test_framer_rejects_garbage_and_keeps_raw_rest() -> None:
    with pytest.raises(FramingError):
        StreamFramer().feed(b"\x80\x00\x00\x00")
    with pytest.raises(FramingError):
        StreamFramer(max_frame=100).feed(b"\x40\x00\xff\xff")
    framer = StreamFramer()
    framer.append(encode_channel_data(0x4000, b"ab", pad=True) + b"raw bytes")
    assert framer.pop() == b"\x40\x00\x00\x02ab\x00\x00"
    assert framer.take_rest() == b"raw bytes"


@given(st.binary(max_size=300), st.integers(1, 50))
def test_framer_never_raises_anything_else(data: bytes, chunk: int) -> None:
    framer = StreamFramer()
    try:
        for i in range(0, len(data), chunk):
            framer.feed(data[i : i + chunk])
    except FramingError:
        pass
