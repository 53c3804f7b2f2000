"""The marker-bit jitter buffer, and the latency breakdown of a loopback call."""

from __future__ import annotations

import asyncio

from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from visavis.client.latency import MarkerJitterBuffer
from visavis.client.media import MediaSource

from .conftest import Stack


def packet(seq: int, ts: int, marker: bool, data: bytes) -> RtpPacket:
    p = RtpPacket(payload_type=96, sequence_number=seq, timestamp=ts, marker=int(marker))
    p._data = data  # type: ignore[attr-defined]  # what the depayloader leaves for the buffer
    return p


def test_a_frame_is_released_on_its_marker_packet() -> None:
    buffer = MarkerJitterBuffer(capacity=128, is_video=True)
    assert buffer.add(packet(1000, 3000, False, b"a")) == (False, None)
    _, frame = buffer.add(packet(1001, 3000, True, b"b"))
    assert frame is not None and frame.data == b"ab" and frame.timestamp == 3000
    _, frame = buffer.add(packet(1002, 6000, True, b"c"))  # a one-packet frame
    assert frame is not None and frame.data == b"c" and frame.timestamp == 6000


def test_aiortc_buffer_waits_for_the_next_frame() -> None:
    buffer = JitterBuffer(capacity=128, is_video=True)
    assert buffer.add(packet(1000, 3000, True, b"a")) == (False, None)
    _, frame = buffer.add(packet(1001, 6000, True, b"b"))
    assert frame is not None and frame.timestamp == 3000  # one frame interval late


def test_a_gap_holds_the_frame_until_it_is_filled() -> None:
    buffer = MarkerJitterBuffer(capacity=128, is_video=True)
    assert buffer.add(packet(10, 90, False, b"a")) == (False, None)
    assert buffer.add(packet(12, 90, True, b"c")) == (False, None)  # 11 missing
    _, frame = buffer.add(packet(11, 90, False, b"b"))  # e.g. a NACK retransmission
    assert frame is not None and frame.data == b"abc"


def test_frames_without_a_marker_still_complete_the_old_way() -> None:
    buffer = MarkerJitterBuffer(capacity=128, is_video=True)
    assert buffer.add(packet(1, 90, False, b"a")) == (False, None)
    _, frame = buffer.add(packet(2, 180, False, b"b"))
    assert frame is not None and frame.data == b"a"


def test_sequence_numbers_wrap() -> None:
    buffer = MarkerJitterBuffer(capacity=128, is_video=True)
    assert buffer.add(packet(65535, 90, False, b"a"))[1] is None
    _, frame = buffer.add(packet(0, 90, True, b"b"))
    assert frame is not None and frame.data == b"ab"


async def test_loopback_latency_breakdown(stack: Stack) -> None:
    alice = await stack.user("alice")
    bob = await stack.user("bob")
    answering = asyncio.create_task(bob.next_incoming(within=10))
    call = await alice.call(bob.handle, MediaSource.test_pattern(320, 240))
    theirs = await bob.answer(await answering, MediaSource.test_pattern(320, 240))
    await asyncio.gather(call.wait_connected(10), theirs.wait_connected(10))
    await asyncio.gather(call.wait_frames(20), theirs.wait_frames(20))
    for c in (call, theirs):
        stages = c.latency_stages()
        assert {"queue", "encode", "to_first_packet", "jitter_wait", "decode", "total"} <= set(
            stages
        ), stages
        assert stages["jitter_wait"] < 10, stages  # aiortc's own buffer: ~67 ms at 15 fps
        assert stages["total"] < 40, stages
    await call.hangup()
