"""Room-level behaviour with fake transports (no sockets): forwarding rewrites, NACK
answered with RTX from history, sender reports rewritten per subscriber, last-N layers."""

from __future__ import annotations

import itertools
import struct
from typing import Any

from visavis.protocol.rtp import RtpPacket
from visavis.protocol.rtp.rtcp import RtcpNack, RtcpSr, parse_compound
from visavis.protocol.sdp import AnswerParams
from visavis.sfu import fastpath
from visavis.sfu.room import Participant, Room
from visavis.sfu.settings import SfuSettings
from visavis.sfu.stats import SfuStats


class FakeTransport:
    def __init__(self) -> None:
        self.rtp: list[bytes] = []
        self.rtcp: list[bytes] = []
        self.connected = True
        self.last_seen = 0.0
        self.local_ufrag, self.local_pwd = "sfu", "pwd"
        self.link = fastpath.Link(self)  # no destination: the fast path sends via send_rtp

    def set_remote(self, ufrag: str, fingerprints: Any) -> bool:
        return True

    def send_rtp(self, data: bytes) -> None:
        self.rtp.append(data)

    def send_rtcp(self, data: bytes) -> None:
        self.rtcp.append(data)


def offer(publish: bool, slots: int, ssrc: int = 0, rids: tuple[str, ...] = ()) -> str:
    common = ["a=ice-ufrag:u", "a=ice-pwd:p", "a=fingerprint:sha-256 AA:BB", "a=setup:actpass"]
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0"]
    if publish:
        lines += [
            "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
            "a=mid:v",
            "a=sendonly",
            *common,
            "a=rtpmap:96 VP8/90000",
            "a=rtpmap:97 rtx/90000",
            "a=fmtp:97 apt=96",
            "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
            "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        ]
        if rids:
            lines += [f"a=rid:{r} send" for r in rids]
            lines.append("a=simulcast:send " + ";".join(rids))
        else:
            lines.append(f"a=ssrc:{ssrc} cname:x")
    for i in range(slots):
        lines += [
            "m=video 9 UDP/TLS/RTP/SAVPF 100 101",
            f"a=mid:s{i}",
            "a=recvonly",
            *common,
            "a=rtpmap:100 VP8/90000",
            "a=rtpmap:101 rtx/90000",
            "a=fmtp:101 apt=100",
            "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        ]
    return "\r\n".join(lines) + "\r\n"


def make_room(**settings: Any) -> Room:
    return Room(
        "r",
        SfuSettings(**settings),
        SfuStats(),
        lambda t: AnswerParams("sfu", "pwd", "sha-256 AA", [("127.0.0.1", 9, "udp")]),
    )


def join(room: Room, name: str) -> Participant:
    p = Participant(room, name, name, "d", lambda _: FakeTransport(), lambda m: None, 0.0)  # type: ignore[arg-type,return-value]
    room.add(p)
    return p


def vp8(seq: int, ts: int, ssrc: int, key: bool, ext: dict[int, bytes] | None = None) -> bytes:
    payload = bytes((0x10, 0x00 if key else 0x01)) + struct.pack("!H", seq) * 20
    return RtpPacket(96, seq, ts, ssrc, extensions=ext or {}, payload=payload).serialize()


def test_forward_nack_rtx_and_sender_report() -> None:
    room = make_room()
    pub, sub = join(room, "pub"), join(room, "sub")
    room.handle_offer(pub, offer(True, 0, ssrc=1111), 0.0)
    result = room.handle_offer(sub, offer(False, 1), 0.0)
    assert "a=ssrc-group:FID" in result.answer.sdp
    assert [s.participant_id for s in result.answer.streams] == ["pub"]
    consumer = sub.consumers["s0"]
    out: list[bytes] = sub.transport.rtp  # type: ignore[attr-defined]
    pub.on_rtp(vp8(500, 9000, 1111, key=False), 0.01)  # no keyframe yet: held back
    assert out == []
    for i in range(10):
        pub.on_rtp(vp8(501 + i, 9000 + 3000 * i, 1111, key=(i == 0)), 0.02 + i * 0.03)
    packets = [RtpPacket.parse(d) for d in out]
    assert len(packets) == 10
    assert {p.ssrc for p in packets} == {consumer.ssrc}
    assert {p.payload_type for p in packets} == {100}
    seqs = [p.sequence_number for p in packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    assert all(3 in p.extensions for p in packets)  # abs-send-time for the subscriber's BWE
    # NACK for the 4th packet: answered as RTX (RFC 4588) with the original payload.
    sub.on_rtcp(RtcpNack(1, consumer.ssrc, (seqs[3],)).serialize(), 1.0)
    rtx = RtpPacket.parse(out[-1])
    assert rtx.payload_type == 101 and rtx.ssrc == consumer.rtx_ssrc
    assert struct.unpack("!H", rtx.payload[:2])[0] == seqs[3]
    assert rtx.payload[2:] == packets[3].payload
    assert room.stats.nack_retransmissions == 1
    # Sender report: rewritten onto the subscriber's SSRC and timestamp line.
    pub.on_rtcp(RtcpSr(1111, 123 << 32, 9000 + 3000 * 3, 10, 1000).serialize(), 1.1)
    (sr,) = parse_compound(sub.transport.rtcp[-1])  # type: ignore[attr-defined]
    assert isinstance(sr, RtcpSr)
    assert sr.ssrc == consumer.ssrc and sr.ntp_timestamp == 123 << 32
    assert sr.rtp_timestamp == packets[3].timestamp
    # PLI towards the publisher when the subscriber asks, rate-limited.
    before = len(pub.transport.rtcp)  # type: ignore[attr-defined]
    from visavis.protocol.rtp.rtcp import RtcpPli

    for _ in range(20):
        sub.on_rtcp(RtcpPli(1, consumer.ssrc).serialize(), 2.0)
    assert len(pub.transport.rtcp) - before == 1  # type: ignore[attr-defined]


def test_last_n_gives_high_layers_to_recent_speakers_and_visible_tiles() -> None:
    room = make_room(last_n=1, initial_bandwidth=50_000_000)
    pubs = [join(room, f"p{i}") for i in range(3)]
    viewer = join(room, "viewer")
    for p in pubs:
        room.handle_offer(p, offer(True, 0, rids=("q", "h", "f")), 0.0)
    room.handle_offer(viewer, offer(False, 3), 0.0)
    ssrc = 1
    now = 0.0
    for step in range(40):
        now = step * 0.05
        for p in pubs:
            for layer, rid in enumerate("qhf"):
                seq = step + 1
                ext = {1: b"v", 4: rid.encode()}
                ssrc_value = 1000 * (pubs.index(p) + 1) + layer
                p.on_rtp(vp8(seq, seq * 3000, ssrc_value, key=step % 10 == 0, ext=ext), now)
        ssrc += 1
    room.speaker.recent = ["p1"]
    viewer.visible = {"p2"}
    room.tick(now + 1.5)
    targets = {c.producer.participant.id: c.selector.target for c in viewer.consumers.values()}
    assert targets == {"p0": 0, "p1": 2, "p2": 2}
    # Layers were learnt from the RID header extension.
    assert [layer.ssrc for layer in pubs[0].producers["v"].layers] == [1000, 1001, 1002]


def test_layout_with_thumbnails_pauses_tiles_not_shown_and_resumes_on_a_keyframe() -> None:
    room = make_room(last_n=1, initial_bandwidth=50_000_000)
    pubs = [join(room, f"p{i}") for i in range(3)]
    viewer = join(room, "viewer")
    for p in pubs:
        room.handle_offer(p, offer(True, 0, ssrc=1000 + pubs.index(p)), 0.0)
    room.handle_offer(viewer, offer(False, 3), 0.0)
    out: list[bytes] = viewer.transport.rtp  # type: ignore[attr-defined]
    by_pub = {c.producer.participant.id: c for c in viewer.consumers.values()}

    def send(step: int, key: bool) -> None:
        for i, p in enumerate(pubs):
            p.on_rtp(vp8(step, step * 3000, 1000 + i, key=key), step * 0.033)

    send(1, key=True)
    assert len(out) == 3
    paused_at = by_pub["p2"].rewriter.last_sequence
    # p0 large, p1 small, p2 not shown: p2 is paused and asks for no keyframe.
    keyframes = room.stats.keyframe_requests
    room.set_layout(viewer, ["p0"], ["p1"], 0.05)
    assert (by_pub["p2"].selector.target, by_pub["p2"].selector.current) == (-1, None)
    assert not by_pub["p2"].selector.wants_keyframe
    assert by_pub["p1"].selector.target == 0
    out.clear()
    for step in range(2, 6):
        send(step, key=False)
    ssrcs = [RtpPacket.parse(d).ssrc for d in out]
    assert by_pub["p2"].ssrc not in ssrcs and ssrcs.count(by_pub["p0"].ssrc) == 4
    room.tick(1.0)  # the periodic allocation keeps it paused, requests nothing for it
    assert by_pub["p2"].selector.target == -1
    assert room.stats.keyframe_requests == keyframes
    rtcp: list[bytes] = pubs[2].transport.rtcp  # type: ignore[attr-defined]
    before = len(rtcp)
    # Shown again: a keyframe is requested at once and the stream resumes on it, its
    # sequence numbers continuing where they stopped.
    room.set_layout(viewer, ["p0"], ["p1", "p2"], 1.1)
    assert room.stats.keyframe_requests == keyframes + 1
    assert [d[1] for d in rtcp[before:]] == [206]  # a PLI to p2
    out.clear()
    send(6, key=False)
    assert by_pub["p2"].ssrc not in [RtpPacket.parse(d).ssrc for d in out]
    send(7, key=True)
    resumed = [RtpPacket.parse(d) for d in out if RtpPacket.parse(d).ssrc == by_pub["p2"].ssrc]
    assert len(resumed) == 1
    assert resumed[0].sequence_number == (paused_at + 1) & 0xFFFF


def audio_offer(publish: bool, slots: int, ssrc: int = 0) -> str:
    common = ["a=ice-ufrag:u", "a=ice-pwd:p", "a=fingerprint:sha-256 AA:BB", "a=setup:actpass"]
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0"]
    mlines = [("a", "sendonly", ssrc)] if publish else []
    mlines += [(f"s{i}", "recvonly", 0) for i in range(slots)]
    for mid, direction, source in mlines:
        lines += [
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            f"a=mid:{mid}",
            f"a={direction}",
            *common,
            "a=rtpmap:111 opus/48000/2",
            "a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        ]
        if source:
            lines.append(f"a=ssrc:{source} cname:x")
    return "\r\n".join(lines) + "\r\n"


def test_audio_of_all_but_the_loudest_goes_out_only_while_it_is_voice() -> None:
    room = make_room(audio_last_n=2, audio_voice_level=50)
    people = [join(room, f"p{i}") for i in range(5)]
    for _ in range(2):  # the second round fills the slots of the first offers
        for i, p in enumerate(people):
            room.handle_offer(p, audio_offer(True, 4, ssrc=500 + i), 0.0)
    assert len(people[0].consumers) == 4
    levels = [5, 20, 80, 90, 100]  # p0 and p1 are the loudest two

    def speak(step: int, level_of: list[int]) -> None:
        for i, p in enumerate(people):
            ext = {2: bytes((0x80 | level_of[i],))}
            packet = RtpPacket(111, step, step * 960, 500 + i, extensions=ext, payload=b"\xfc" * 20)
            p.on_rtp(packet.serialize(), step * 0.02)

    for step in range(1, 50):
        speak(step, levels)
    room.tick(1.0)
    muted = {p.id: p.producers["a"].layers[0].quiet_above for p in people}
    assert muted == {"p0": -1, "p1": -1, "p2": 50, "p3": 50, "p4": 50}
    listener: list[bytes] = people[0].transport.rtp  # type: ignore[attr-defined]
    listener.clear()
    speak(60, [5, 20, 30, 90, 100])  # p2 starts to speak: its packet goes out at once
    senders = {RtpPacket.parse(d).ssrc for d in listener}
    by_ssrc = {c.ssrc: c.producer.participant.id for c in people[0].consumers.values()}
    assert sorted(by_ssrc[s] for s in senders) == ["p1", "p2"]
    # A room no bigger than audio_last_n + 1 forwards everyone's audio whole.
    room.remove(people[4])
    room.remove(people[3])
    room.tick(2.0)
    assert {p.producers["a"].layers[0].quiet_above for p in people[:3]} == {-1}


def test_tick_steps_yield_per_participant_and_survive_a_leaver() -> None:
    """The server reads the media socket between tick steps: a step per participant (and
    per participant again in the 1 s report), and a participant who leaves while the tick
    is suspended is skipped, not an error."""
    room = make_room()
    people = [join(room, f"p{i}") for i in range(6)]
    for p in people:
        room.handle_offer(p, offer(True, 5, ssrc=1000 + int(p.id[1:])), 0.0)
    steps = room.tick_steps(0.5, [])
    next(steps)
    room.remove(people[3], "left")
    rest = sum(1 for _ in steps)
    assert rest >= 6 - 2  # the keyframe pass goes on with the others
    dead: list[Participant] = []
    report = list(room.tick_steps(2.0, dead))  # a report is due: steps per participant again
    assert len(report) >= 3 * 5 and dead == []
    sub = people[0]
    assert sub.transport.rtcp  # the report's receiver reports went out


def test_a_room_starting_at_once_forwards_the_allocated_layers_from_the_first_keyframes() -> None:
    """Everyone joins, negotiates and shows a layout before any media, then every
    publisher's three simulcast layers start in the same instant (keyframes): each
    subscriber gets the top layer of its shown tile only and the lowest of the others,
    from the first packets. (A consumer used to start at the top layer until the first
    report with measured bitrates: at 32 people, 3x the steady state's packets for
    seconds, until a keyframe of each lower layer.)"""
    n = 6
    room = make_room(last_n=1, initial_bandwidth=50_000_000)
    people = [join(room, f"p{i}") for i in range(n)]
    for _ in range(2):  # the second round: slots for the producers of later joiners
        for p in people:
            room.handle_offer(p, offer(True, n - 1, rids=("q", "h", "f")), 0.0)
    for i, p in enumerate(people):
        room.set_layout(p, [f"p{(i + 1) % n}"], None, 0.0)
    for step, key in ((1, True), (2, False), (3, False)):
        for i, p in enumerate(people):
            for layer, rid in enumerate("qhf"):
                ext = {1: b"v", 4: rid.encode()}
                p.on_rtp(vp8(step, step * 3000, 1000 * (i + 1) + layer, key, ext), 0.01 * step)
    for i, p in enumerate(people):
        current = {c.producer.participant.id: c.selector.current for c in p.consumers.values()}
        shown = f"p{(i + 1) % n}"
        assert current == {q.id: 2 if q.id == shown else 0 for q in people if q is not p}
        # Three packets per tile, and the shown tile's first lowest-layer keyframe (it
        # starts on the first keyframe at or below its target): no hidden top layer.
        assert len(p.transport.rtp) == 3 * (n - 1) + 1  # type: ignore[attr-defined]
    # Each new SSRC was learnt once (its first packet) and then forwarded without Python.
    assert all(len(p.ssrc_map) == 3 for p in people)


def test_a_burst_of_publishers_asks_each_subscriber_to_renegotiate_once() -> None:
    """N publishers offering in one burst: each participant is asked for a new offer
    once, at the next tick, counting every producer it lacks (it used to be asked once
    per publisher: O(N^2) offers for clients that do not coalesce). A participant whose
    own offer came after the burst is answered with it and not asked again."""
    n = 8
    room = make_room()
    asked: dict[str, list[Any]] = {f"p{i}": [] for i in range(n)}
    people = []
    for i in range(n):
        p = Participant(
            room, f"p{i}", f"p{i}", "d", lambda _: FakeTransport(), asked[f"p{i}"].append, 0.0
        )  # type: ignore[arg-type,return-value]
        room.add(p)
        people.append(p)
    for p in people:
        room.handle_offer(p, offer(True, 0, ssrc=1000 + len(p.producers) + int(p.id[1:])), 0.0)
    last = people[-1]
    result = room.handle_offer(last, offer(True, 0, ssrc=1000 + n - 1), 0.0)
    assert result.renegotiate is not None and result.renegotiate.video == n - 1
    assert all(not any(m.type == "renegotiate" for m in a) for a in asked.values())
    room.tick(0.1)
    for p in people[:-1]:
        requests = [m for m in asked[p.id] if m.type == "renegotiate"]
        assert [m.video for m in requests] == [n - 1]
    assert not any(m.type == "renegotiate" for m in asked[last.id])
    room.tick(0.2)  # nothing new: nothing asked
    assert sum(m.type == "renegotiate" for a in asked.values() for m in a) == n - 1
