"""Chromium-like offers for the SDP subset's tests and the SFU room's: every video codec
Chromium lists (VP8, VP9 profiles 0 and 2, H.264 in three variants, AV1, with RTX), a
publishing m-line (simulcast rids or one SSRC) and a receiving one."""

from __future__ import annotations

from visavis.protocol.rtp.av1 import URI_DEPENDENCY_DESCRIPTOR

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
