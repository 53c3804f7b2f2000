"""One video codec per room: the answer to a Chromium-like offer (which lists VP8, VP9,
H.264 and AV1) takes the room's codec in the variant every member decodes, negotiates
the dependency descriptor where the SFU receives VP9 or AV1 (and sends AV1), and an offer without
the room's codec is refused with ``unsupported_codec`` and a message saying why. The
room's producers get the codec (and the descriptor's id) the fast path finds keyframes by,
and H.264 keyframes switch a subscriber's layer."""

from __future__ import annotations

import re

import pytest

from tests.sfu.test_sfu_room import FakeTransport, join, make_room
from visavis.protocol.rtp import RtpPacket
from visavis.protocol.rtp.av1 import URI_DEPENDENCY_DESCRIPTOR
from visavis.protocol.rtp.keyframes import VideoCodec
from visavis.sfu.errors import CodecError
from visavis.sfu.sdp import (
    AnswerParams,
    SendInfo,
    build_answer,
    parse_offer,
    require_video_codec,
)

VIDEO_CODECS = [
    ("96", "VP8/90000", None),
    ("97", "rtx/90000", "apt=96"),
    ("98", "VP9/90000", "profile-id=0"),
    ("99", "rtx/90000", "apt=98"),
    ("100", "VP9/90000", "profile-id=2"),
    ("102", "H264/90000", "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"),
    ("104", "H264/90000", "level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f"),
    ("106", "H264/90000", "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"),
    ("107", "rtx/90000", "apt=106"),
    ("45", "AV1/90000", "level-idx=5;profile=0;tier=0"),
    ("46", "rtx/90000", "apt=45"),
]


def video_section(
    mid: str, direction: str, codecs: list[tuple[str, str, str | None]], rids: bool = True
) -> list[str]:
    lines = [
        f"m=video 9 UDP/TLS/RTP/SAVPF {' '.join(pt for pt, _, _ in codecs)}",
        f"a=mid:{mid}",
        f"a={direction}",
        "a=ice-ufrag:u",
        "a=ice-pwd:p",
        "a=fingerprint:sha-256 AA:BB",
        "a=setup:actpass",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        f"a=extmap:11 {URI_DEPENDENCY_DESCRIPTOR}",
    ]
    for pt, rtpmap, fmtp in codecs:
        lines.append(f"a=rtpmap:{pt} {rtpmap}")
        if fmtp:
            lines.append(f"a=fmtp:{pt} {fmtp}")
        lines += [f"a=rtcp-fb:{pt} nack", f"a=rtcp-fb:{pt} nack pli"]
    if direction == "sendonly" and rids:
        lines += ["a=rid:q send", "a=rid:h send", "a=simulcast:send q;h"]
    elif direction == "sendonly":
        lines.append("a=ssrc:4242 cname:x")
    return lines


def chromium_offer(
    codecs: list[tuple[str, str, str | None]] = VIDEO_CODECS, rids: bool = True
) -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=extmap-allow-mixed"]
    lines += video_section("0", "sendonly", codecs, rids) + video_section("1", "recvonly", codecs)
    return "\r\n".join(lines) + "\r\n"


PARAMS = AnswerParams("sfu", "pwd", "sha-256 AA", [("127.0.0.1", 9, "udp")])


def section(answer: str, mid: str) -> str:
    return next(s for s in answer.split("m=") if f"a=mid:{mid}\r\n" in s)


@pytest.mark.parametrize(
    ("codec", "pt", "rtx", "fmtp"),
    [
        (VideoCodec.VP8, 96, 97, None),
        (VideoCodec.VP9, 98, 99, "profile-id=0"),
        (VideoCodec.H264, 106, 107, "packetization-mode=1;profile-level-id=42e01f"),
        (VideoCodec.AV1, 45, 46, "level-idx=5"),
    ],
)
def test_answer_takes_the_rooms_codec(
    codec: VideoCodec, pt: int, rtx: int, fmtp: str | None
) -> None:
    offer = parse_offer(chromium_offer())
    send = {"1": SendInfo(1234, 5678, "alice", "alice-video-0")}
    answer = build_answer(offer, PARAMS, receive={"0"}, send=send, video_codec=codec)
    for mid in ("0", "1"):
        body = section(answer, mid)
        assert body.startswith(f"video 9 UDP/TLS/RTP/SAVPF {pt} {rtx}\r\n")
        assert re.findall(r"a=rtpmap:(\d+) (\w+)", body) == [
            (str(pt), codec.sdp_name),
            (str(rtx), "rtx"),
        ]
        if fmtp:
            assert fmtp in body
    dd = f"a=extmap:11 {URI_DEPENDENCY_DESCRIPTOR}"
    with_dd = codec in (VideoCodec.VP9, VideoCodec.AV1)
    assert (dd in section(answer, "0")) is with_dd  # received from the publisher
    # towards subscribers in AV1 rooms only: Chromium decodes AV1 SVC by it
    assert (dd in section(answer, "1")) is (codec is VideoCodec.AV1)
    assert ("a=extmap-allow-mixed" in answer) is with_dd
    # without extmap-allow-mixed a keyframe's long descriptor could not be sent
    unmixed = parse_offer(chromium_offer().replace("a=extmap-allow-mixed\r\n", ""))
    answer = build_answer(unmixed, PARAMS, receive={"0"}, send=send, video_codec=codec)
    assert dd not in section(answer, "1")


def test_offer_without_the_rooms_codec_is_refused_saying_why() -> None:
    no_h264 = [c for c in VIDEO_CODECS if not c[1].startswith("H264") and c[0] != "107"]
    offer = parse_offer(chromium_offer(no_h264))
    with pytest.raises(CodecError) as caught:
        require_video_codec(offer, VideoCodec.H264)
    assert caught.value.code == "unsupported_codec"
    assert "H264 (42e01f, packetization-mode=1)" in caught.value.message
    assert "(it offers VP8, VP9, AV1)" in caught.value.message
    # H.264 offered only as baseline 42001f or in mode 0 is not enough either
    mode0 = [c for c in VIDEO_CODECS if c[0] in ("104", "102")]
    with pytest.raises(CodecError):
        require_video_codec(parse_offer(chromium_offer(mode0)), VideoCodec.H264)
    require_video_codec(offer, VideoCodec.AV1)  # present: no error


def test_room_refuses_a_participant_without_its_codec_and_routes_the_others() -> None:
    room = make_room()
    room.video_codec = VideoCodec.AV1
    alice = join(room, "alice")
    only_vp8 = [c for c in VIDEO_CODECS if c[0] in ("96", "97")]
    with pytest.raises(CodecError):
        room.handle_offer(alice, chromium_offer(only_vp8), 0.0)
    result = room.handle_offer(alice, chromium_offer(), 0.0)
    assert "a=rtpmap:45 AV1/90000" in result.answer.sdp
    producer = alice.producers["0"]
    assert [(layer.codec, layer.dd_id) for layer in producer.layers] == [(3, 11), (3, 11)]


def h264(seq: int, ssrc: int, key: bool, rid: bytes) -> bytes:
    payload = b"\x78\x00\x02\x67\x42\x00\x02\x68\xce" if key else b"\x41\x9a" + bytes(30)
    ext = {1: b"0", 4: rid}  # mid, rid: the SFU learns the simulcast SSRCs from them
    return RtpPacket(106, seq, seq * 3000, ssrc, extensions=ext, payload=payload).serialize()


def test_h264_room_switches_layers_on_h264_keyframes() -> None:
    room = make_room()
    room.video_codec = VideoCodec.H264
    alice, bob = join(room, "alice"), join(room, "bob")
    room.handle_offer(alice, chromium_offer(), 0.0)
    room.handle_offer(bob, chromium_offer(), 0.0)
    consumer = bob.consumers["1"]
    assert consumer.pt == 106 and consumer.selector.target == 1
    transport = bob.transport
    assert isinstance(transport, FakeTransport)
    sent = transport.rtp
    for seq in range(1, 5):  # delta frames of the top layer: nothing to start on
        alice.on_rtp(h264(seq, 5000, False, b"h"), 0.1 * seq)
    assert sent == [] and consumer.selector.wants_keyframe
    alice.on_rtp(h264(5, 5000, True, b"h"), 0.5)  # SPS + PPS: a keyframe starts
    alice.on_rtp(h264(6, 5000, False, b"h"), 0.6)
    assert len(sent) == 2 and consumer.selector.current == 1
    consumer.selector.set_target(0)  # down: waits for the low layer's keyframe
    alice.on_rtp(h264(1, 6000, False, b"q"), 0.7)
    alice.on_rtp(h264(7, 5000, False, b"h"), 0.7)
    assert len(sent) == 3 and consumer.selector.current == 1
    alice.on_rtp(h264(2, 6000, True, b"q"), 0.8)
    assert len(sent) == 4 and consumer.selector.current == 0


def test_vp9_svc_thumbnails_get_the_lowest_spatial_layer_and_ask_for_a_keyframe_back() -> None:
    room = make_room()
    room.video_codec = VideoCodec.VP9
    alice, bob = join(room, "alice"), join(room, "bob")
    room.handle_offer(alice, chromium_offer(rids=False), 0.0)  # one stream: may be SVC
    room.handle_offer(bob, chromium_offer(), 0.0)
    producer = alice.producers["0"]
    assert producer.svc and not bob.producers["0"].svc  # bob sends simulcast
    consumer = bob.consumers["1"]
    assert (consumer.spatial, consumer.spatial_target) == (7, 7)
    producer.layers[0].last_packet = 1.0  # the stream is being received
    room.set_layout(bob, [], ["alice"], 1.0)  # alice shown small
    assert (consumer.spatial_target, consumer.temporal_target) == (0, 0)
    consumer.selector.decide(0, True)  # the stream flows (a keyframe was forwarded)
    assert not consumer.wants_keyframe  # going down needs none
    consumer.spatial = consumer.temporal = 0  # as the fast path does at the next picture
    room.set_layout(bob, ["alice"], [], 2.0)  # shown large: every layer, from a keyframe
    assert (consumer.spatial_target, consumer.temporal_target) == (7, 7)
    assert consumer.wants_keyframe


def test_av1_svc_stream_is_selected_and_its_descriptor_forwarded() -> None:
    """One AV1 stream with the dependency descriptor may be SVC: thumbnails get its
    lowest spatial and temporal layer; subscribers get the descriptor (``dd_id``)."""
    room = make_room()
    room.video_codec = VideoCodec.AV1
    alice, bob = join(room, "alice"), join(room, "bob")
    room.handle_offer(alice, chromium_offer(rids=False), 0.0)
    room.handle_offer(bob, chromium_offer(), 0.0)
    producer = alice.producers["0"]
    assert producer.svc and producer.temporal_layers and not bob.producers["0"].svc
    consumer = bob.consumers["1"]
    assert consumer.dd_id == 11
    producer.layers[0].last_packet = 1.0
    room.set_layout(bob, [], ["alice"], 1.0)
    assert (consumer.spatial_target, consumer.temporal_target) == (0, 0)
    # without the descriptor nothing says an AV1 packet's layers: no selection
    carol = join(room, "carol")
    room.handle_offer(
        carol, chromium_offer(rids=False).replace(URI_DEPENDENCY_DESCRIPTOR, "x"), 0.0
    )
    assert not carol.producers["0"].svc and not carol.producers["0"].temporal_layers
