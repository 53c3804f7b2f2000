"""Pure parts of the client SDK: frame stamps, path classification, SDP and ICE helpers."""

from __future__ import annotations

import pytest
from av import VideoFrame

from visavis.client.call import parse_candidate, strip_candidates
from visavis.client.ice import choose_ice_servers
from visavis.client.media import (
    Stamp,
    block_size,
    decode_stamp,
    encode_stamp,
    latency_ms,
    read_stamp,
)
from visavis.client.stats import Path, RateMeter, combined_kind, path_kind
from visavis.signaling import messages as m


@pytest.mark.parametrize(("width", "height"), [(160, 120), (320, 240), (640, 480)])
def test_stamp_round_trip(width: int, height: int) -> None:
    stride = width + 32
    luma = bytearray([90]) * (stride * height)
    stamp = Stamp(sent_ms=(1 << 40) - 5, frame=65535)
    encode_stamp(luma, width, height, stride, stamp)
    assert decode_stamp(bytes(luma), width, height, stride) == stamp


def test_stamp_survives_noise_and_rejects_garbage() -> None:
    width, height = 320, 240
    luma = bytearray([128]) * (width * height)
    encode_stamp(luma, width, height, width, Stamp(123456789, 42))
    noisy = bytes(max(0, min(255, v + (17 if i % 3 else -23))) for i, v in enumerate(luma))
    assert decode_stamp(noisy, width, height, width) == Stamp(123456789, 42)
    flipped = bytearray(luma)
    size = block_size(width)
    for y in range(size):  # invert the first block: the checksum no longer matches
        for x in range(size):
            flipped[y * width + x] = 255 - flipped[y * width + x]
    assert decode_stamp(bytes(flipped), width, height, width) is None
    assert decode_stamp(bytes(width * height), width, height, width) is None


def test_stamp_survives_vp8() -> None:
    from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder, vp8_depayload
    from aiortc.jitterbuffer import JitterFrame

    from visavis.client.media import TestPatternTrack

    track = TestPatternTrack(160, 120)
    encoder, decoder = Vp8Encoder(), Vp8Decoder()
    for index in range(5):
        payloads, timestamp = encoder.encode(track.frame_at(index, sent_ms=1000 + index))
        data = b"".join(vp8_depayload(p) for p in payloads)
        decoded = decoder.decode(JitterFrame(data=data, timestamp=timestamp))
        assert len(decoded) == 1 and isinstance(decoded[0], VideoFrame)
        assert read_stamp(decoded[0]) == Stamp(1000 + index, index)


def test_latency_wraps() -> None:
    assert latency_ms(Stamp((1 << 40) - 10, 0), now_ms=5) == 15


def test_path_kind() -> None:
    assert path_kind("host", "host") == "host"
    assert path_kind("host", "prflx") == "srflx"
    assert path_kind("srflx", "relay") == "relay"
    a = Path("host", "host", "10.0.0.2:1", "198.18.0.100:2")
    b = Path("host", "prflx", "198.18.0.100:2", "198.18.0.11:1")
    assert a.kind == "host" and combined_kind(a, b) == "srflx"
    assert combined_kind(None, None) is None
    relay = Path("relay", "srflx", "198.18.0.1:5", "x:1", relay_protocol="tcp")
    assert relay.label == "relay/tcp"


def test_rate_meter() -> None:
    meter = RateMeter()
    assert meter.sample(0, 10.0) == 0
    assert meter.sample(1000, 11.0) == 8000


def test_strip_candidates() -> None:
    sdp = "v=0\r\nm=video 9 UDP 0\r\na=candidate:1 1 udp 1 1.2.3.4 5 typ host\r\n" \
          "a=end-of-candidates\r\na=mid:0\r\n"
    rest, candidates = strip_candidates(sdp)
    assert "candidate" not in rest and "a=mid:0" in rest
    assert candidates == ["candidate:1 1 udp 1 1.2.3.4 5 typ host"]


def test_parse_candidate() -> None:
    good = m.IceCandidate(
        candidate="candidate:1 1 udp 2130706431 10.0.0.2 5000 typ host", sdpMid="0"
    )
    cand = parse_candidate(good)
    assert cand is not None and cand.ip == "10.0.0.2" and cand.port == 5000
    assert parse_candidate(m.IceCandidate(candidate="", sdpMid="0")) is None
    for bad in ("candidate:garbage", "candidate:1 1 udp 1 10.0.0.2 99999 typ host",
                "candidate:1 1 sctp 1 10.0.0.2 5 typ host", "hello world"):
        with pytest.raises(ValueError):
            parse_candidate(m.IceCandidate(candidate=bad, sdpMid="0"))


def test_choose_ice_servers() -> None:
    servers = [
        m.IceServer(urls=["stun:198.18.0.1:3478"]),
        m.IceServer(
            urls=["turn:198.18.0.1:3478?transport=udp", "turn:198.18.0.1:3478?transport=tcp"],
            username="u",
            credential="p",
        ),
    ]
    udp = choose_ice_servers(servers, "auto", True)
    assert [s.urls for s in udp] == ["stun:198.18.0.1:3478", "turn:198.18.0.1:3478?transport=udp"]
    tcp = choose_ice_servers(servers, "auto", False)
    assert [s.urls for s in tcp] == ["turn:198.18.0.1:3478?transport=tcp"]
    assert tcp[0].username == "u" and tcp[0].credential == "p"
    forced = choose_ice_servers(servers, "tcp", True)
    assert forced[1].urls == "turn:198.18.0.1:3478?transport=tcp"
    assert choose_ice_servers([], "auto", None) == []
    # TURN over TLS (turns:) only when asked for; plain TCP never picks it over turn:.
    servers[1].urls.insert(0, "turns:198.18.0.1:5349?transport=tcp")
    assert choose_ice_servers(servers, "tls", False)[0].urls.startswith("turns:")
    assert choose_ice_servers(servers, "auto", False)[0].urls.endswith("3478?transport=tcp")
