"""A screen share in a group call: one more published video track beside the camera,
named in the offer's ``screen``, seen by subscribers as ``source: "screen"``, and
unpublished when the publisher's next offer makes its m-line inactive (fake transports,
no sockets; the browser side is tests/web/test_screen_share.py)."""

from __future__ import annotations

import json

import pytest
from prometheus_client import generate_latest
from websockets.asyncio.client import connect

from tests.sfu.conftest import TokenFactory
from tests.sfu.test_sfu_room import join, make_room, offer, vp8
from visavis.protocol.rtp import RtpPacket
from visavis.sfu.errors import SdpError
from visavis.sfu.messages import Renegotiate
from visavis.sfu.server import SfuServer

COMMON = ["a=ice-ufrag:u", "a=ice-pwd:p", "a=fingerprint:sha-256 AA:BB", "a=setup:actpass"]


def video(mid: str, direction: str, ssrc: int | None) -> list[str]:
    lines = [
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        f"a=mid:{mid}",
        f"a={direction}",
        *COMMON,
        "a=rtpmap:96 VP8/90000",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
    ]
    return lines + ([f"a=ssrc:{ssrc} cname:x"] if ssrc is not None else [])


def publisher_offer(screen: str) -> str:
    """Camera on mid ``cam`` (SSRC 1111), the screen slot ``scr`` (SSRC 2222)."""
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0"]
    lines += video("cam", "sendonly", 1111) + video("scr", screen, 2222)
    return "\r\n".join(lines) + "\r\n"


def test_a_screen_share_is_its_own_stream_and_stopping_it_frees_the_slot() -> None:
    room = make_room()
    pub, sub = join(room, "pub"), join(room, "sub")
    told: list[object] = []
    sub.notify = told.append
    room.handle_offer(pub, publisher_offer("sendonly"), 0.0, screen=["scr"])
    assert {p.mid: p.source for p in pub.producers.values()} == {"cam": "camera", "scr": "screen"}
    result = room.handle_offer(sub, offer(False, 2), 0.0)
    sources = {s.mid: (s.participant_id, s.source) for s in result.answer.streams}
    assert sorted(sources.values()) == [("pub", "camera"), ("pub", "screen")]
    screen_slot = next(mid for mid, (_, source) in sources.items() if source == "screen")
    screen_consumer = sub.consumers[screen_slot]

    out: list[bytes] = sub.transport.rtp  # type: ignore[attr-defined]
    pub.on_rtp(vp8(10, 100, 2222, key=True), 0.1)
    assert [RtpPacket.parse(d).ssrc for d in out] == [screen_consumer.ssrc]

    # The share stops: the m-line goes inactive. The subscriber is asked to offer again,
    # its slot no longer carries anything, and the screen's packets go nowhere.
    told.clear()
    room.handle_offer(pub, publisher_offer("inactive"), 1.0)
    assert list(pub.producers) == ["cam"]
    assert screen_slot not in sub.consumers
    room.tick(1.05)  # renegotiation requests go out at the next tick
    assert any(isinstance(m, Renegotiate) for m in told)
    again = room.handle_offer(sub, offer(False, 2), 1.1)
    assert [(s.participant_id, s.source) for s in again.answer.streams] == [("pub", "camera")]
    assert "a=inactive" in again.answer.sdp
    sent = len(out)
    pub.on_rtp(vp8(11, 200, 2222, key=True), 1.2)
    assert len(out) == sent
    assert room.stats.dropped.get("unknown_ssrc", 0) >= 1

    # Sharing again on the same m-line publishes a new screen track into the free slot.
    room.handle_offer(pub, publisher_offer("sendonly"), 2.0, screen=["scr"])
    third = room.handle_offer(sub, offer(False, 2), 2.1)
    assert sorted(s.source for s in third.answer.streams) == ["camera", "screen"]


def test_screen_must_name_a_video_m_line_the_offer_sends() -> None:
    room = make_room()
    pub = join(room, "pub")
    for bad in (["nope"], ["scr"]):
        with pytest.raises(SdpError, match="screen names mid"):
            room.handle_offer(pub, publisher_offer("inactive"), 0.0, screen=bad)
    assert pub.producers == {}  # refused before anything was applied


class FakeLink:
    """The part of a cascade PeerLink a Bridge uses; messages are collected."""

    def __init__(self) -> None:
        from tests.sfu.test_sfu_room import FakeTransport

        self.transport = FakeTransport()
        self.consumers: dict[int, object] = {}
        self.remote_ssrcs: dict[int, object] = {}
        self.sent: list[dict[str, object]] = []

    def send(self, message: dict[str, object]) -> None:
        self.sent.append(message)


def test_a_screen_share_crosses_a_cascade_link_and_its_end_too() -> None:
    from visavis.sfu.cascade import Bridge

    room_a, room_b = make_room(), make_room()
    link_a, link_b = FakeLink(), FakeLink()
    bridge_a = Bridge(link_a, room_a)  # type: ignore[arg-type]
    bridge_b = Bridge(link_b, room_b)  # type: ignore[arg-type]
    room_a.links["B"] = bridge_a
    pub = join(room_a, "pub")
    sub = join(room_b, "sub")
    room_a.handle_offer(pub, publisher_offer("sendonly"), 0.0, screen=["scr"])
    for message in link_a.sent:  # A -> B: joined, then both producers
        if message["t"] == "joined":
            bridge_b.on_joined(message["p"], 0.0)  # type: ignore[arg-type]
        elif message["t"] == "producer":
            bridge_b.on_producer(message, 0.0)
    assert len(link_b.remote_ssrcs) == 2
    result = room_b.handle_offer(sub, offer(False, 2), 0.1)
    assert sorted(s.source for s in result.answer.streams) == ["camera", "screen"]

    link_a.sent.clear()
    room_a.handle_offer(pub, publisher_offer("inactive"), 1.0)
    assert [m["t"] for m in link_a.sent] == ["unpublished"]
    assert not any(c.producer.source == "screen" for c in link_a.consumers.values())  # type: ignore[attr-defined]
    bridge_b.on_unpublished(str(link_a.sent[0]["pid"]), str(link_a.sent[0]["mid"]))
    assert [c.producer.source for c in sub.consumers.values()] == ["camera"]
    assert len(link_b.remote_ssrcs) == 1  # only the camera's stream still arrives


async def test_a_refused_offer_is_answered_with_its_code_and_counted(
    sfu: SfuServer, token: TokenFactory
) -> None:
    """Over the real control socket: ``screen`` naming an m-line that does not send, and
    an offer the SDP subset cannot parse, are ``bad_sdp`` (a clear message), counted by
    code, and the client stays joined."""
    async with connect(sfu.control_url) as ws:
        await ws.send(json.dumps({"type": "join", "token": token("alice")}))
        assert json.loads(await ws.recv())["type"] == "joined"
        await ws.send(
            json.dumps({"type": "offer", "sdp": publisher_offer("inactive"), "screen": ["scr"]})
        )
        reply = json.loads(await ws.recv())
        assert reply["type"] == "error" and reply["code"] == "bad_sdp"
        assert "screen names mid 'scr'" in reply["message"]
        await ws.send(json.dumps({"type": "offer", "sdp": "v=0\r\n"}))
        reply = json.loads(await ws.recv())
        assert (reply["code"], reply["message"]) == ("bad_sdp", "offer has no media sections")
        await ws.send(json.dumps({"type": "offer", "sdp": publisher_offer("sendonly")}))
        answer = json.loads(await ws.recv())
        assert answer["type"] == "answer"
    text = generate_latest(sfu.registry).decode()
    assert 'visavis_sfu_control_refused_total{code="bad_sdp"} 2.0' in text
