"""One video codec per room, in the room: an offer without the room's codec is refused
with ``unsupported_codec`` (the SDP subset's :class:`UnsupportedCodec` translated) and a
message saying why, a malformed one with ``bad_sdp``; the room's producers get the codec
(and the descriptor's id) the fast path finds keyframes by, and H.264 keyframes switch a
subscriber's layer. The answers per codec: tests/protocol/test_sdp_codecs.py."""

from __future__ import annotations

import pytest

from tests.protocol.sdp_offers import VIDEO_CODECS, chromium_offer
from tests.sfu.test_sfu_room import FakeTransport, join, make_room
from visavis.protocol.rtp import RtpPacket
from visavis.protocol.rtp.av1 import URI_DEPENDENCY_DESCRIPTOR
from visavis.protocol.rtp.keyframes import VideoCodec
from visavis.sfu.errors import CodecError, SdpError


def test_room_refuses_a_participant_without_its_codec_and_routes_the_others() -> None:
    room = make_room()
    room.video_codec = VideoCodec.AV1
    alice = join(room, "alice")
    only_vp8 = [c for c in VIDEO_CODECS if c[0] in ("96", "97")]
    with pytest.raises(CodecError) as caught:
        room.handle_offer(alice, chromium_offer(only_vp8), 0.0)
    assert caught.value.code == "unsupported_codec"
    assert caught.value.message == (
        "this room's video codec is AV1, which this client does not offer on m-line '0'"
        " (it offers VP8)"
    )
    with pytest.raises(SdpError) as bad:
        room.handle_offer(alice, "v=0\r\n", 0.0)
    assert (bad.value.code, bad.value.message) == ("bad_sdp", "offer has no media sections")
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
