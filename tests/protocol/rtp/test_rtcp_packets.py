"""RTCP codecs: one table per packet type, cross-checked against aiortc's RTCP code."""

from __future__ import annotations

import contextlib

import pytest
from aiortc import rtp as aiortc_rtp
from hypothesis import given
from hypothesis import strategies as st

from visavis.protocol.rtp import RtcpError
from visavis.protocol.rtp.rtcp import (
    ReportBlock,
    RtcpBye,
    RtcpFir,
    RtcpNack,
    RtcpPli,
    RtcpRemb,
    RtcpRr,
    RtcpSdes,
    RtcpSr,
    RtcpTwcc,
    RtcpUnknown,
    parse_compound,
)

BLOCK = ReportBlock(0x1111, 25, -3, 70000, 12, 0xABCD, 65536)


@pytest.mark.parametrize(
    "packet",
    [
        RtcpSr(1, 0x0102030405060708, 90000, 10, 1000, (BLOCK,)),
        RtcpRr(2, (BLOCK, BLOCK)),
        RtcpRr(2),
        RtcpSdes(((5, ((1, b"cname@x"),)), (6, ((1, b"abc"), (2, b"nm"))))),
        RtcpBye((1, 2, 3)),
        RtcpNack(1, 2, (10, 11, 26, 100, 65535, 0)),
        RtcpPli(7, 8),
        RtcpFir(7, ((8, 3), (9, 255))),
        RtcpRemb(7, 2_500_000 & ~0x7, (8, 9)),
    ],
)
def test_roundtrip(packet: object) -> None:
    data = packet.serialize()  # type: ignore[attr-defined]
    assert parse_compound(data) == [packet]


def test_compound_and_aiortc_interop() -> None:
    sr = aiortc_rtp.RtcpSrPacket(
        ssrc=5,
        sender_info=aiortc_rtp.RtcpSenderInfo(
            ntp_timestamp=123456789, rtp_timestamp=4321, packet_count=9, octet_count=900
        ),
    )
    nack = aiortc_rtp.RtcpRtpfbPacket(fmt=1, ssrc=1, media_ssrc=2, lost=[5, 6, 9, 40])
    pli = aiortc_rtp.RtcpPsfbPacket(fmt=1, ssrc=1, media_ssrc=2)
    remb = aiortc_rtp.RtcpPsfbPacket(
        fmt=15, ssrc=1, media_ssrc=0, fci=aiortc_rtp.pack_remb_fci(1_000_000, [2, 3])
    )
    data = bytes(sr) + bytes(nack) + bytes(pli) + bytes(remb)
    parsed = parse_compound(data)
    assert parsed[0] == RtcpSr(5, 123456789, 4321, 9, 900)
    assert parsed[1] == RtcpNack(1, 2, (5, 6, 9, 40))
    assert parsed[2] == RtcpPli(1, 2)
    assert isinstance(parsed[3], RtcpRemb)
    assert parsed[3].ssrcs == (2, 3)
    assert abs(parsed[3].bitrate - 1_000_000) < 1_000_000 / 2**17
    ours = RtcpNack(1, 2, (5, 6, 9, 40)).serialize()
    assert aiortc_rtp.RtcpPacket.parse(ours)[0].lost == [5, 6, 9, 40]
    assert aiortc_rtp.unpack_remb_fci(
        aiortc_rtp.RtcpPacket.parse(RtcpRemb(1, 800_000, (4,)).serialize())[0].fci
    ) == (800_000, [4])


def test_twcc_and_unknown() -> None:
    # base 5, three packets (run-length chunk: symbol 1, run 3), deltas 1, 2, 3 ticks
    body = bytes.fromhex("00000001000000020005000300000101" + "2003" + "010203" + "000000")
    data = bytes([0x8F, 205, 0, 6]) + body
    assert parse_compound(data) == [RtcpTwcc(1, 2, 5, 1, 1, (1, 2, 3))]
    app = bytes([0x80, 204, 0, 1, 0, 0, 0, 9])
    assert parse_compound(app) == [RtcpUnknown(204, 0, app)]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x80\xc8", "trailing"),
        (bytes([0x80, 200, 0, 9]) + bytes(8), "overruns"),
        (bytes([0x40, 201, 0, 1, 0, 0, 0, 1]), "version"),
        (bytes([0x81, 201, 0, 1, 0, 0, 0, 1]), "report blocks"),
        (bytes([0x81, 206, 0, 1, 0, 0, 0, 1]), "PLI"),
        (bytes([0xA0, 201, 0, 1, 0, 0, 0, 0]), "padding"),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    with pytest.raises(RtcpError, match=message):
        parse_compound(data)


@given(st.binary(max_size=120))
def test_fuzz(data: bytes) -> None:
    with contextlib.suppress(RtcpError):
        parse_compound(data)
