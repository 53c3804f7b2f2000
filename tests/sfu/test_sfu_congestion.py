"""Congestion control and loss repair at room level, with fake transports (no sockets):
transport-wide CC negotiated where offered; every packet to a subscriber stamped and its
TWCC feedback driving the delay-based estimate and so the simulcast layer (down on a
building queue, back up after a probe); publishers get TWCC feedback for what arrived,
NACKs for holes in their sequence numbers, and their RTX repairs are forwarded as the
original packets."""

from __future__ import annotations

import struct

from tests.sfu.test_sfu_room import join, make_room, offer, vp8
from visavis.protocol.rtp import RtpPacket
from visavis.protocol.rtp.extensions import URI_TRANSPORT_CC, find_extension
from visavis.protocol.rtp.rtcp import RtcpNack, RtcpRemb, RtcpTwcc, parse_compound
from visavis.protocol.rtp.rtcp.twcc import build_twcc
from visavis.sfu.gcc import Usage
from visavis.sfu.room import Participant

TWCC = 5


def twcc_offer(publish: bool, slots: int, **kw: object) -> str:
    """``offer()`` whose receive slots offer transport-cc (as Chromium does on all)."""
    sdp = offer(publish, slots, **kw)  # type: ignore[arg-type]
    extra = f"a=extmap:{TWCC} {URI_TRANSPORT_CC}\r\na=rtcp-fb:100 transport-cc\r\n"
    sdp = sdp.replace("a=fmtp:101 apt=100\r\n", "a=fmtp:101 apt=100\r\n" + extra)
    extra = f"a=extmap:{TWCC} {URI_TRANSPORT_CC}\r\na=rtcp-fb:96 transport-cc\r\n"
    return sdp.replace("a=fmtp:97 apt=96\r\n", "a=fmtp:97 apt=96\r\n" + extra)


def sections(sdp: str) -> list[str]:
    return sdp.split("m=")[1:]


def test_transport_cc_is_answered_and_every_packet_to_a_subscriber_is_stamped() -> None:
    room = make_room()
    pub, sub = join(room, "pub"), join(room, "sub")
    answer = room.handle_offer(pub, twcc_offer(True, 0, ssrc=1111), 0.0).answer.sdp
    (sending,) = sections(answer)
    assert f"a=extmap:{TWCC} {URI_TRANSPORT_CC}" in sending and "transport-cc" in sending
    assert pub.gcc is None and pub.transport.link.twcc_id == -1  # it receives nothing
    assert pub.transport.link.rx_twcc_id == TWCC  # its arrivals are noted for feedback
    assert URI_TRANSPORT_CC not in room.handle_offer(pub, offer(True, 0, ssrc=1111), 0.1).answer.sdp
    assert pub.transport.link.rx_twcc_id == -1  # not offered: not answered
    answer = room.handle_offer(sub, twcc_offer(False, 1), 0.0).answer.sdp
    (slot,) = sections(answer)
    assert f"a=extmap:{TWCC} {URI_TRANSPORT_CC}" in slot and "a=rtcp-fb:100 transport-cc" in slot
    assert sub.gcc is not None and sub.transport.link.twcc_id == TWCC
    for i in range(5):
        pub.on_rtp(vp8(10 + i, 3000 * i, 1111, key=i == 0), 0.1 + 0.01 * i)
    out: list[bytes] = sub.transport.rtp  # type: ignore[attr-defined]
    stamps = [struct.unpack("!H", find_extension(p, TWCC) or b"")[0] for p in out]
    assert stamps == [0, 1, 2, 3, 4]
    assert [sub.transport.link.sent(s) for s in stamps] == [
        (0.1 + 0.01 * i, len(p)) for i, p in enumerate(out)
    ]
    assert all(3 in RtpPacket.parse(p).extensions for p in out)  # abs-send-time kept
    # A NACK answered as RTX is stamped too (it takes the next transport-wide number).
    consumer = sub.consumers["s0"]
    lost = RtpPacket.parse(out[2]).sequence_number
    sub.on_rtcp(RtcpNack(1, consumer.ssrc, (lost,)).serialize(), 1.0)
    rtx = out[-1]
    assert RtpPacket.parse(rtx).ssrc == consumer.rtx_ssrc
    assert find_extension(rtx, TWCC) == struct.pack("!H", 5)
    assert sub.transport.link.sent(5) == (1.0, len(rtx))


class Downlink:
    """The subscriber's side of the path: each packet's arrival = send + delay(t); its
    TWCC feedback every 100 ms, for everything the SFU stamped since the last one."""

    def __init__(self, sub: Participant) -> None:
        self.sub = sub
        self.next_seq = 0
        self.count = 0

    def feedback(self, delay: float, now: float) -> None:
        link = self.sub.transport.link
        arrivals: list[int | None] = []
        while link.sent(self.next_seq) is not None and self.next_seq != link.twcc_seq:
            sent_at, _ = link.sent(self.next_seq)  # type: ignore[misc]
            arrivals.append(int((sent_at + delay) * 1e6))
            self.next_seq = (self.next_seq + 1) & 0xFFFF
        if not arrivals:
            return
        base = (self.next_seq - len(arrivals)) & 0xFFFF
        self.count += 1
        fb = build_twcc(7, 0, base, arrivals, self.count)
        self.sub.on_rtcp(fb.serialize(), now)


def test_a_building_queue_lowers_the_layer_and_a_probe_raises_it_again() -> None:
    room = make_room(dead_timeout=100.0)
    pub, sub = join(room, "pub"), join(room, "sub")
    room.handle_offer(pub, twcc_offer(True, 0, rids=("q", "h", "f")), 0.0)
    room.handle_offer(sub, twcc_offer(False, 1), 0.0)
    consumer = sub.consumers["s0"]
    downlink = Downlink(sub)
    sizes = {"q": 125, "h": 375, "f": 1250}  # every 10 ms: 100k, 300k, 1M bit/s
    seq = 0
    t = 0.0
    delay = 0.02
    ramp_from: float | None = None
    ramp_to: float | None = None
    layers_seen: list[int | None] = []

    def run(until: float) -> None:
        nonlocal seq, t, delay
        while t < until - 1e-9:
            seq += 1
            for layer, rid in enumerate("qhf"):
                payload_size = sizes[rid]
                packet = RtpPacket(
                    96, seq, seq * 900, 1000 + layer,
                    extensions={1: b"v", 4: rid.encode()},
                    payload=bytes((0x10, 0x00 if seq % 50 == 1 else 0x01)) + bytes(payload_size),
                ).serialize()  # fmt: skip
                pub.on_rtp(packet, t)
            t = round(t + 0.01, 6)
            if ramp_from is not None and ramp_from <= t and (ramp_to is None or t < ramp_to):
                delay += 0.001  # the bottleneck queue grows 1 ms per 10 ms
            if round(t * 100) % 10 == 0:
                downlink.feedback(delay, t)
                room.tick(t)
                layers_seen.append(consumer.selector.current)

    run(3.0)
    assert consumer.selector.current == 2 and sub.gcc is not None
    assert sub.gcc.usage is Usage.NORMAL and room.stats.twcc_feedback >= 29
    # The path narrows: the queue builds for 0.6 s, then stays (flat, long).
    ramp_from, ramp_to = 3.0, 3.6
    run(5.0)
    assert room.stats.congestion_signals >= 1
    assert sub.bwe.estimate(t) < 1_000_000
    assert consumer.selector.target < 2 and consumer.selector.current < 2  # switched down
    assert room.stats.probe_packets == 0  # not within 2 s of the overuse
    # The path is wide again (flat delay): a probe finds room and the top layer returns.
    run(12.0)
    assert room.stats.probe_packets > 0 and sub.prober.successes >= 1
    assert consumer.selector.current == 2
    assert sub.bwe.estimate(t) >= 1_000_000


def rtx_offer(ssrc: int, rtx_ssrc: int) -> str:
    """A publisher that takes NACKs and answers them with RTX on ``rtx_ssrc``."""
    sdp = offer(True, 0, ssrc=ssrc).replace(
        "a=fmtp:97 apt=96", "a=fmtp:97 apt=96\r\na=rtcp-fb:96 nack"
    )
    return sdp.replace(
        f"a=ssrc:{ssrc} cname:x",
        f"a=ssrc-group:FID {ssrc} {rtx_ssrc}\r\na=ssrc:{ssrc} cname:x\r\na=ssrc:{rtx_ssrc} cname:x",
    )


def test_holes_are_nacked_to_the_publisher_and_rtx_repairs_forwarded() -> None:
    room = make_room()
    pub, sub = join(room, "pub"), join(room, "sub")
    room.handle_offer(pub, rtx_offer(1111, 2222), 0.0)
    room.handle_offer(sub, offer(False, 1), 0.0)
    out: list[bytes] = sub.transport.rtp  # type: ignore[attr-defined]
    rtcp: list[bytes] = pub.transport.rtcp  # type: ignore[attr-defined]
    for seq in (100, 101, 102, 103, 105, 106, 109, 110):  # 104, 107, 108 lost
        pub.on_rtp(vp8(seq, seq * 3000, 1111, key=seq == 100), seq * 0.01)
    room.tick(1.2)

    def nacked() -> list[tuple[int, ...]]:
        found = []
        for data in rtcp:
            for packet in parse_compound(data):
                if isinstance(packet, RtcpNack):
                    assert packet.media_ssrc == 1111 and packet.sender_ssrc == pub.rtcp_ssrc
                    found.append(packet.lost)
        rtcp.clear()
        return found

    assert nacked() == [(104, 107, 108)]
    assert room.stats.nacks_sent == 3
    # The publisher repairs 104 with RTX (RFC 4588: original seq first in the payload).
    original = vp8(104, 104 * 3000, 1111, key=False)
    body = RtpPacket.parse(original).payload
    rtx = RtpPacket(97, 7, 104 * 3000, 2222, payload=struct.pack("!H", 104) + body).serialize()
    before = len(out)
    pub.on_rtp(rtx, 1.25)
    assert room.stats.publisher_repairs == 1
    (repaired,) = [RtpPacket.parse(d) for d in out[before:]]
    consumer = sub.consumers["s0"]
    mapped = [RtpPacket.parse(d).sequence_number for d in out[:before]]
    assert repaired.ssrc == consumer.ssrc and repaired.payload == body
    assert repaired.sequence_number == (mapped[3] + 1) & 0xFFFF  # in the hole 104 left
    # Padding-only RTX (the publisher probing its uplink) is dropped, counted.
    padding = bytearray(RtpPacket(97, 8, 0, 2222, payload=b"").serialize()) + bytes(199) + b"\xc8"
    padding[0] |= 0x20
    pub.on_rtp(bytes(padding), 1.26)
    assert room.stats.dropped["publisher_rtx"] == 1 and len(out) == before + 1
    # Still missing 107 and 108: asked again, at most three times in all, then given up.
    room.tick(1.3)
    assert nacked() == [(107, 108)]
    room.tick(1.4)
    room.tick(1.5)
    assert nacked() == [(107, 108)]
    assert room.stats.nacks_sent == 3 + 2 + 2


def test_publishers_get_feedback_for_what_arrived() -> None:
    room = make_room()
    pub = join(room, "pub")
    room.handle_offer(pub, twcc_offer(True, 0, ssrc=1111), 0.0)
    link = pub.transport.link
    rtcp: list[bytes] = pub.transport.rtcp  # type: ignore[attr-defined]

    def arrive(tseq: int, at: float) -> None:
        packet = vp8(
            int(at * 100), int(at * 90000), 1111, key=False, ext={TWCC: struct.pack("!H", tseq)}
        )
        link.twcc_received(packet, at)  # what the fast path does for each packet it reads
        pub.on_rtp(packet, at)

    for tseq, at in ((65534, 1.0), (65535, 1.01), (1, 1.02), (0, 1.03), (3, 1.04)):
        arrive(tseq, at)  # 0 and 1 swapped, 2 lost, the sequence wraps
    room.tick(1.1)

    def feedback() -> list[RtcpTwcc]:
        found = [p for d in rtcp for p in parse_compound(d) if isinstance(p, RtcpTwcc)]
        rtcp.clear()
        return found

    (fb,) = feedback()
    assert (fb.sender_ssrc, fb.media_ssrc, fb.base_sequence) == (pub.rtcp_ssrc, 1111, 65534)
    first = fb.arrivals()[0][1]
    assert first is not None
    relative = {seq: None if at is None else at - first for seq, at in fb.arrivals()}
    assert relative == {65534: 0, 65535: 10_000, 0: 30_000, 1: 20_000, 2: None, 3: 40_000}
    room.tick(1.2)
    assert feedback() == []  # nothing new
    arrive(4, 1.25)
    room.tick(1.3)
    (fb,) = feedback()
    assert fb.base_sequence == 4 and fb.status_count == 1
    assert room.stats.twcc_feedback_sent == 2


def test_a_remb_subscriber_moved_down_is_stepped_back_up_by_probes() -> None:
    """Without TWCC: REMB for the slot's SSRCs drives the layer; after a REMB that falls
    (overuse) the subscriber is moved down and its REMB, like aiortc's, then creeps up at
    8 %/s; RTX padding probes that meet no congestion step the estimate up and the top
    layer returns, while the REMB itself is still far below it."""
    room = make_room(dead_timeout=100.0)
    pub, sub = join(room, "pub"), join(room, "sub")
    room.handle_offer(pub, twcc_offer(True, 0, rids=("q", "h", "f")), 0.0)
    room.handle_offer(sub, offer(False, 1), 0.0)
    assert sub.gcc is None
    consumer = sub.consumers["s0"]
    ssrcs = (consumer.ssrc, consumer.rtx_ssrc or 0)
    sizes = {"q": 125, "h": 375, "f": 1250}  # every 10 ms: 100k, 300k, 1M bit/s
    seq = 0
    t = 0.0
    remb = 3_000_000.0
    top_again: float | None = None

    def run(until: float) -> None:
        nonlocal seq, t, remb, top_again
        while t < until - 1e-9:
            seq += 1
            for layer, rid in enumerate("qhf"):
                packet = RtpPacket(
                    96, seq, seq * 900, 1000 + layer,
                    extensions={1: b"v", 4: rid.encode()},
                    payload=bytes((0x10, 0x00 if seq % 50 == 1 else 0x01)) + bytes(sizes[rid]),
                ).serialize()  # fmt: skip
                pub.on_rtp(packet, t)
            t = round(t + 0.01, 6)
            if round(t * 100) % 50 == 0:  # a REMB every 0.5 s, growing 4 % each
                remb *= 1.04
                sub.on_rtcp(RtcpRemb(7, int(remb), ssrcs).serialize(), t)
            if round(t * 100) % 10 == 0:
                room.tick(t)
                if top_again is None and t > 5.0 and consumer.selector.current == 2:
                    top_again = t

    run(3.0)
    assert consumer.selector.current == 2 and room.stats.probe_packets == 0
    remb = 120_000  # the receiver overused: its REMB falls to what got through
    run(5.0)
    assert sub.bwe.congested_at >= 3.0 and consumer.selector.current == 0
    run(14.0)
    assert room.stats.probe_packets > 0 and sub.remb_prober.successes >= 2
    assert top_again is not None and top_again < 13.0, top_again  # 3 probes: 120k -> 1.2M
    assert remb < 400_000 < sub.bwe.estimate(t)  # stepped up, not waiting for the REMB
