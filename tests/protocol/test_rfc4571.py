"""RFC 4571 framing (visavis.protocol.rfc4571) on real packets: the RFC 5769 binding
request and an SRTP-sized RTP packet framed, split at every possible read boundary."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from visavis.protocol.rfc4571 import (
    FRAME_LIMIT,
    MAX_FRAME,
    FramingError,
    Rfc4571Framer,
    frame,
)

# RFC 5769 2.1: a 108-byte STUN binding request, as an ICE-TCP client sends its check.
STUN_CHECK = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae802200105354554e207465737420636c69656e74"
    "002400046e0001ff80290008932ff9b151263b36000600096576746a3a68367659202020000800149a"
    "eaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf"
)
RTP = bytes.fromhex("906f1234deadbeef0000abcd") + bytes(1188)  # 1,200 bytes


def test_frame_layout() -> None:
    assert frame(STUN_CHECK)[:2] == b"\x00\x6c" and frame(STUN_CHECK)[2:] == STUN_CHECK
    assert frame(RTP)[:4] == bytes.fromhex("04b0906f")
    assert frame(b"x" * FRAME_LIMIT)[:2] == b"\xff\xff"
    assert Rfc4571Framer.frame(b"\x80") == b"\x00\x01\x80"
    for bad in (b"", b"x" * (FRAME_LIMIT + 1)):
        with pytest.raises(ValueError, match="cannot frame"):
            frame(bad)


def test_every_cut_of_a_two_frame_stream() -> None:
    stream = frame(STUN_CHECK) + frame(RTP)
    for cut in range(len(stream) + 1):
        framer = Rfc4571Framer(max_frame=1500)
        got = framer.feed(stream[:cut]) + framer.feed(stream[cut:])
        assert got == [STUN_CHECK, RTP] and framer.buffered == 0


def test_limits_and_broken_streams() -> None:
    with pytest.raises(ValueError, match="max_frame"):
        Rfc4571Framer(max_frame=0)
    with pytest.raises(ValueError, match="max_frame"):
        Rfc4571Framer(max_frame=FRAME_LIMIT + 1)
    framer = Rfc4571Framer()
    assert framer.max_frame == MAX_FRAME
    assert framer.feed(b"\x10") == [] and framer.buffered == 1  # half a length
    with pytest.raises(FramingError, match="4097"):
        framer.feed(b"\x01")  # 0x1001 = 4097 > 4096
    assert framer.buffered == 0
    with pytest.raises(FramingError, match="frame of 0 bytes"):
        Rfc4571Framer().feed(frame(STUN_CHECK) + b"\x00\x00")


@given(
    packets=st.lists(st.binary(min_size=1, max_size=300), max_size=8),
    cuts=st.lists(st.integers(1, 64), min_size=1, max_size=20),
)
def test_any_packets_any_reads(packets: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame(p) for p in packets)
    framer = Rfc4571Framer(max_frame=300)
    got: list[bytes] = []
    offset, i = 0, 0
    while offset < len(stream):
        size = cuts[i % len(cuts)]
        got += framer.feed(stream[offset : offset + size])
        assert framer.buffered <= 301
        offset, i = offset + size, i + 1
    assert got == packets and framer.buffered == 0
