"""One video codec per room, in the SDP subset: the answer to a Chromium-like offer
(which lists VP8, VP9, H.264 and AV1) takes the room's codec in the variant every member
decodes and negotiates the dependency descriptor where the SFU receives VP9 or AV1 (and
sends AV1); an offer without the room's codec is refused with :class:`UnsupportedCodec`
and a message saying why (the SFU's translation to ``unsupported_codec``:
tests/sfu/test_sdp_codecs.py)."""

from __future__ import annotations

import re

import pytest
from sdp_offers import VIDEO_CODECS, chromium_offer

from visavis.protocol.rtp.av1 import URI_DEPENDENCY_DESCRIPTOR
from visavis.protocol.rtp.keyframes import VideoCodec
from visavis.protocol.sdp import (
    AnswerParams,
    SendInfo,
    UnsupportedCodec,
    build_answer,
    parse_offer,
    require_video_codec,
)

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
    with pytest.raises(UnsupportedCodec) as caught:
        require_video_codec(offer, VideoCodec.H264)
    assert "H264 (42e01f, packetization-mode=1)" in str(caught.value)
    assert "(it offers VP8, VP9, AV1)" in str(caught.value)
    # H.264 offered only as baseline 42001f or in mode 0 is not enough either
    mode0 = [c for c in VIDEO_CODECS if c[0] in ("104", "102")]
    with pytest.raises(UnsupportedCodec):
        require_video_codec(parse_offer(chromium_offer(mode0)), VideoCodec.H264)
    require_video_codec(offer, VideoCodec.AV1)  # present: no error
