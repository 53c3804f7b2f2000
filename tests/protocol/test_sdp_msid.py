"""The SFU's ``a=msid`` lines name each sender by its participant id, which for a call
link's guest holds the name as typed (``guest:Notes bot/<id>``). Written raw, the space
split the line and Chromium refused the answer: a browser in the room received nobody
(found by tests/e2ee/test_sdk_guest.py). Identifiers are now RFC 8830 tokens of at most
64 characters: as they were when they already are, a digest otherwise."""

from __future__ import annotations

import re

from visavis.protocol.sdp import AnswerParams, SendInfo, build_answer, msid_id, parse_offer

OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 1 1 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "a=fingerprint:sha-256 AA:BB",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
        "c=IN IP4 0.0.0.0",
        "a=recvonly",
        "a=mid:0",
        "a=rtcp-mux",
        "a=rtpmap:96 VP8/90000",
        "a=rtpmap:97 rtx/90000",
        "a=fmtp:97 apt=96",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:0123456789abcdef0123456789",
        "a=setup:actpass",
        "",
    ]
)
TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`{|}~@/:]{1,64}")


def msid_lines(stream: str, track: str) -> list[list[str]]:
    params = AnswerParams("ufrag", "pwd", "sha-256 AA:BB", [("127.0.0.1", 5000, "udp")])
    send = {"0": SendInfo(1111, 2222, stream, track)}
    answer = build_answer(parse_offer(OFFER), params, receive=set(), send=send)
    found = re.findall(r"^a=(?:ssrc:\d+ )?msid:([^\r\n]*)", answer, re.MULTILINE)
    assert len(found) == 3  # a=msid, and one per SSRC (media, RTX)
    return [line.split(" ") for line in found]


def test_a_guest_name_with_spaces_makes_two_token_ids_on_every_msid_line() -> None:
    guest = "guest:Notes bot/9f2c4e1a7b3d5c6e8f0a1b2c"
    for ids in msid_lines(guest, f"{guest}-video-1"):
        assert len(ids) == 2 and all(TOKEN.fullmatch(i) for i in ids), ids
        assert ids == [msid_id(guest), msid_id(f"{guest}-video-1")]  # one stream per sender
    assert msid_id(guest) != msid_id("guest:Notes bot/another-guest-id")


def test_ids_that_are_tokens_stay_as_they_were_and_long_ones_are_digested() -> None:
    device = "ann@example.com/9f2c4e1a7b3d5c6e8f0a1b2c"
    assert msid_lines(device, f"{device}-audio-0")[0] == [device, f"{device}-audio-0"]
    long = "a-very-long-handle-for-one-person@subdomain.example.com/9f2c4e1a7b3d5c6e8f0a1b2c"
    assert len(long) > 64 and TOKEN.fullmatch(msid_id(long))
    assert TOKEN.fullmatch(msid_id("guest:Zoë Ångström/1"))  # any script a name has
