"""A receive slot reused for another producer continues its outgoing stream: the same
SSRC (and RTX SSRC), the next sequence number, a timestamp that follows on in time. A
participant who leaves and comes back (a cascaded room's leg failing over: the far node
sees its participants leave with the link and rejoin with the new one) lands on the slot
it had, and a receiver that keys streams by SSRC keeps decoding it."""

from __future__ import annotations

import itertools

from visavis.protocol.rtp import RtpPacket
from visavis.sfu.room import Participant

from .test_sfu_room import join, make_room, offer, vp8


def packets(sub: Participant) -> list[RtpPacket]:
    return [RtpPacket.parse(d) for d in sub.transport.rtp]  # type: ignore[attr-defined]


def test_a_slot_reused_by_a_returning_producer_continues_its_stream() -> None:
    room = make_room()
    sub = join(room, "sub")
    first = join(room, "pub")
    room.handle_offer(first, offer(True, 0, ssrc=1111), 0.0)
    result = room.handle_offer(sub, offer(False, 1), 0.0)
    slot = sub.consumers["s0"]
    ssrc, rtx_ssrc = slot.ssrc, slot.rtx_ssrc
    for i in range(5):
        first.on_rtp(vp8(100 + i, 5000 + 3000 * i, 1111, key=i == 0), 1.0 + i * 0.05)
    before = packets(sub)
    assert [p.ssrc for p in before] == [ssrc] * 5

    # The publisher goes (its node's link dropped) and comes back, as a new participant
    # with a new SSRC and other sequence numbers, two seconds later.
    room.remove(first)
    assert "s0" not in sub.consumers and "s0" in sub.freed
    room.handle_offer(sub, offer(False, 1), 2.0)  # the slot is idle now
    back = join(room, "pub")
    room.handle_offer(back, offer(True, 0, ssrc=2222), 3.0)
    result = room.handle_offer(sub, offer(False, 1), 3.0)
    assert [s.participant_id for s in result.answer.streams] == ["pub"]
    again = sub.consumers["s0"]
    assert (again.ssrc, again.rtx_ssrc) == (ssrc, rtx_ssrc)
    assert f"a=ssrc:{ssrc} " in result.answer.sdp
    assert not sub.freed
    back.on_rtp(vp8(40000, 777, 2222, key=False), 3.2)  # no keyframe yet: held back
    for i in range(3):
        back.on_rtp(vp8(40001 + i, 900 + 3000 * i, 2222, key=i == 0), 3.3 + i * 0.05)
    after = packets(sub)[5:]
    assert [p.ssrc for p in after] == [ssrc] * 3
    # Sequence numbers go on from the last one sent; the timestamp moves on by about the
    # time that passed since the first publisher's last packet (at 1.2 s; the slot was
    # reused at 3.0 s, its first packet went at 3.3 s), at 90 kHz.
    seqs = [p.sequence_number for p in before + after]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    gap = (after[0].timestamp - before[-1].timestamp) & 0xFFFFFFFF
    assert round(1.8 * 90000) <= gap <= round(2.1 * 90000)


def test_a_slot_no_longer_offered_is_forgotten() -> None:
    room = make_room()
    sub, pub = join(room, "sub"), join(room, "pub")
    room.handle_offer(pub, offer(True, 0, ssrc=1111), 0.0)
    room.handle_offer(sub, offer(False, 1), 0.0)
    room.remove(pub)
    assert set(sub.freed) == {"s0"}
    room.handle_offer(sub, offer(True, 0, ssrc=3333), 1.0)  # it only publishes now
    assert not sub.freed
