"""Transport-wide CC feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01
s3.1) against packets laid out by hand, bit by bit; any feedback round-trips, and
arbitrary bytes parse or are refused with RtcpError, nothing else."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visavis.protocol.rtp.errors import RtcpError
from visavis.protocol.rtp.rtcp import RtcpTwcc, parse_compound
from visavis.protocol.rtp.rtcp.twcc import build_twcc

# Base 65534 (the run wraps), six packets, reference time 256 (x 64 ms), feedback 7:
#   65534 received +4 ticks (1 ms)      symbol 1 (small delta, 1 byte: 04)
#   65535 lost                          symbol 0
#       0 received +255 ticks           symbol 1 (FF)
#       1 received -8 ticks (-2 ms)     symbol 2 (large or negative, 2 bytes: FFF8)
#       2 received +300 ticks (75 ms)   symbol 2 (012C)
#       3 lost                          symbol 0
# One 2-bit status vector chunk: 1 1 | 01 00 01 10 10 00 | 00 (padding symbol) = D1A0.
MIXED = bytes.fromhex(
    "8fcd0006"  # V=2 FMT=15, PT=205, length 6 words
    "11223344"  # packet sender SSRC
    "55667788"  # media source SSRC
    "fffe0006"  # base sequence 65534, status count 6
    "00010007"  # reference time 256, feedback packet count 7
    "d1a0" "04ff" "fff8" "012c"
)  # fmt: skip


def test_parse_a_two_bit_vector_with_lost_negative_and_large_deltas() -> None:
    fb = RtcpTwcc.parse(MIXED)
    assert fb == RtcpTwcc(0x11223344, 0x55667788, 65534, 256, 7, (4, None, 255, -8, 300, None))
    assert fb.status_count == 6
    ref = 256 * 64_000
    assert fb.arrivals() == [
        (65534, ref + 1_000),
        (65535, None),
        (0, ref + 1_000 + 63_750),
        (1, ref + 1_000 + 63_750 - 2_000),
        (2, ref + 1_000 + 63_750 - 2_000 + 75_000),
        (3, None),
    ]
    assert fb.serialize() == MIXED  # the encoder picks the same chunk


# Fifteen packets, one lost at position 2 and two at 6-7: a 1-bit vector chunk
# 1 0 | 1 1 0 1 1 1 0 0 1 1 1 1 1 1 = B73F, then a run-length chunk 0 01 | run 1 = 2001.
ONE_BIT = bytes.fromhex(
    "8fcd0008" "00000001" "00000002"
    "0064000f"  # base 100, 15 packets
    "fffffe00"  # reference time -2 (24-bit signed), feedback 0
    "b73f" "2001"
    "010203040506070809" "0a0b0c"  # 12 one-byte deltas: 32 bytes, no padding
)  # fmt: skip


def test_parse_one_bit_vector_and_run_length_negative_reference() -> None:
    fb = RtcpTwcc.parse(ONE_BIT)
    lost = {2, 6, 7}
    deltas = iter(range(1, 13))
    assert fb.deltas == tuple(None if i in lost else next(deltas) for i in range(15))
    assert fb.reference_time == -2 and fb.base_sequence == 100
    assert fb.arrivals()[0] == (100, -2 * 64_000 + 250)
    assert fb.serialize() == ONE_BIT
    assert parse_compound(ONE_BIT + MIXED) == [fb, RtcpTwcc.parse(MIXED)]


def test_long_runs_use_run_length_chunks() -> None:
    fb = RtcpTwcc(1, 2, 0, 0, 0, (None,) * 20 + (5,) * 30)
    data = fb.serialize()
    assert data[20:24] == bytes.fromhex("0014201e")  # 20 lost, then 30 small deltas
    assert RtcpTwcc.parse(data) == fb


def test_build_from_arrival_times_round_trips() -> None:
    arrivals = [10_000_000, None, 10_000_500, 9_999_000, 10_090_000, None, 10_090_250]
    fb = build_twcc(9, 8, 65535, arrivals, 3)
    assert fb.reference_time == 10_000_000 // 64_000
    again = RtcpTwcc.parse(fb.serialize())
    assert again == fb
    assert [a for _, a in again.arrivals()] == [
        None if a is None else a - a % 250 for a in arrivals
    ]
    with pytest.raises(RtcpError):
        build_twcc(9, 8, 0, [None, None], 0)
    with pytest.raises(RtcpError):
        build_twcc(9, 8, 0, [0, 10_000_000], 0)  # 40 s gap: no 16-bit delta


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (MIXED[:2] + b"\x00\x05" + MIXED[4:24], "truncated"),  # 2 of 6 delta bytes
        (bytes.fromhex("8fcd0004" "00000001" "00000002" "00000003" "00000000"), "truncated"),
        (bytes.fromhex("8fcd0005" "00000001" "00000002" "00000001" "00000000" "60010000"),
         "reserved"),
    ],
)  # fmt: skip
def test_bad_feedback_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(RtcpError, match=message):
        RtcpTwcc.parse(data)


@settings(max_examples=300, deadline=None)
@given(
    deltas=st.lists(st.one_of(st.none(), st.integers(-0x8000, 0x7FFF)), min_size=1, max_size=400),
    base=st.integers(0, 0xFFFF),
    reference=st.integers(-(1 << 23), (1 << 23) - 1),
    count=st.integers(0, 255),
)
def test_any_feedback_round_trips(
    deltas: list[int | None], base: int, reference: int, count: int
) -> None:
    fb = RtcpTwcc(1, 2, base, reference, count, tuple(deltas))
    assert RtcpTwcc.parse(fb.serialize()) == fb


@settings(max_examples=500, deadline=None)
@given(body=st.binary(max_size=120))
def test_arbitrary_bodies_parse_or_are_refused(body: bytes) -> None:
    body = body[: len(body) // 4 * 4]
    data = bytes([0x8F, 205]) + struct.pack("!H", len(body) // 4) + body
    try:
        fb = RtcpTwcc.parse(data)
    except RtcpError:
        return
    assert len(fb.arrivals()) == fb.status_count
