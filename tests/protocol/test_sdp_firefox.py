"""The SFU's SDP subset against Firefox's way of offering under max-bundle: every m-line
after the first is ``port 0`` + ``a=bundle-only`` (RFC 8843 s7.2), which is not a
rejection. (Read as one, Firefox's camera was refused and each renegotiation added more
dead transceivers: tests/web/test_firefox.py's group call.)"""

from __future__ import annotations

from visavis.protocol.sdp import AnswerParams, build_answer, parse_offer

# Trimmed from a Firefox 153 offer: audio first, then simulcast video, bundle-only.
FIREFOX_OFFER = "\r\n".join(
    [
        "v=0",
        "o=mozilla...THIS_IS_SDPARTA-99.0 1 0 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "a=fingerprint:sha-256 6A:6E:9B:24:5C:B4:BD:42:2B:05:09:13:82:75:73:53:B3:81:7E:A2:0A:"
        "68:41:2C:84:0F:AC:2A:FF:AB:81:C5",
        "a=group:BUNDLE 0 1",
        "a=ice-options:trickle",
        "m=audio 9 UDP/TLS/RTP/SAVPF 109",
        "c=IN IP4 0.0.0.0",
        "a=sendonly",
        "a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=ice-pwd:d4cddd47e35828264f5b2320239dc691",
        "a=ice-ufrag:c66e2626",
        "a=mid:0",
        "a=rtcp-mux",
        "a=rtpmap:109 opus/48000/2",
        "a=setup:actpass",
        "m=video 0 UDP/TLS/RTP/SAVPF 120 124",
        "c=IN IP4 0.0.0.0",
        "a=bundle-only",
        "a=sendonly",
        "a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=extmap:9/sendonly urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        "a=fmtp:124 apt=120",
        "a=ice-pwd:d4cddd47e35828264f5b2320239dc691",
        "a=ice-ufrag:c66e2626",
        "a=mid:1",
        "a=rid:q send",
        "a=rid:h send",
        "a=rid:f send",
        "a=rtcp-mux",
        "a=rtpmap:120 VP8/90000",
        "a=rtpmap:124 rtx/90000",
        "a=setup:actpass",
        "a=simulcast:send q;h;f",
        "m=video 0 UDP/TLS/RTP/SAVPF 120",
        "c=IN IP4 0.0.0.0",
        "a=recvonly",
        "a=mid:2",
        "a=rtpmap:120 VP8/90000",
        "",
    ]
)


def test_bundle_only_sections_are_accepted_and_a_plain_port_0_is_not() -> None:
    offer = parse_offer(FIREFOX_OFFER)
    audio, video, dead = offer.media
    assert not audio.rejected
    assert video.bundle_only and not video.rejected
    assert video.rids == ["q", "h", "f"]
    assert dead.rejected  # port 0 without bundle-only: really rejected

    params = AnswerParams("ufrag", "pwd", "sha-256 AA:BB", [("127.0.0.1", 5000, "udp")])
    answer = build_answer(offer, params, receive={"0", "1"}, send={})
    assert "a=group:BUNDLE 0 1\r\n" in answer
    sections = answer.split("m=")[1:]
    assert sections[1].startswith("video 9 ")
    assert "a=recvonly" in sections[1] and "a=simulcast:recv q;h;f" in sections[1]
    assert sections[2].startswith("video 0 ")
