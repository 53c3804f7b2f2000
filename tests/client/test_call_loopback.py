"""Two SDK devices call each other through a real signaling server and relay, on loopback."""

from __future__ import annotations

import asyncio

from visavis.client.call import Call
from visavis.client.media import MediaSource
from visavis.client.session import Session
from visavis.signaling import messages as m

from .conftest import Stack


async def answer_next(session: Session, source: MediaSource | None = None) -> Call:
    incoming = await session.next_incoming(within=10)
    return await session.answer(incoming, source or MediaSource.test_pattern(160, 120))


async def test_call_connects_and_media_flows_both_ways(stack: Stack) -> None:
    alice = await stack.user("alice")
    bob = await stack.user("bob")
    answering = asyncio.create_task(answer_next(bob))
    call = await alice.call(bob.handle, MediaSource.test_pattern(160, 120))
    bob_call = await answering
    await asyncio.gather(call.wait_connected(15), bob_call.wait_connected(15))
    await asyncio.gather(call.wait_frames(10, within=10), bob_call.wait_frames(10, within=10))
    for c in (call, bob_call):
        stats = await c.stats()
        assert stats.state == "connected"
        assert stats.path is not None and stats.path.kind == "host"
        assert stats.path.local_address.startswith("127.0.0.1:")
        assert stats.frames_decoded >= 10 and (stats.width, stats.height) == (160, 120)
        assert stats.latency_ms is not None and 0 <= stats.latency_ms < 1000
        assert c.received.audio_frames > 0
    await call.hangup()
    assert await bob_call.wait_ended(5) == "remote_hangup"
    assert call.reason == "hangup"


async def test_forced_relay_path(stack: Stack) -> None:
    alice = await stack.user("alice", ice_transport_policy="relay")
    bob = await stack.user("bob", ice_transport_policy="relay")
    answering = asyncio.create_task(answer_next(bob))
    call = await alice.call(bob.handle, MediaSource.test_pattern(160, 120))
    bob_call = await answering
    await asyncio.gather(call.wait_connected(15), bob_call.wait_connected(15))
    await asyncio.gather(call.wait_frames(5), bob_call.wait_frames(5))
    for c in (call, bob_call):
        assert c.path is not None and c.path.kind == "relay"
        assert c.path.relay_protocol == "udp"
    await call.hangup()


async def test_decline_and_cancel(stack: Stack) -> None:
    alice = await stack.user("alice")
    bob = await stack.user("bob")
    async with bob.events() as events:
        call = await alice.call(bob.handle)
        incoming = await events.next(m.CallIncoming, within=5)
        await bob.decline(incoming)
    assert await call.wait_ended(5) == "declined"
    assert call.state == "failed"

    async with bob.events() as events:
        call = await alice.call(bob.handle)
        await events.next(m.CallIncoming, within=5)
        await call.hangup()
        stop = await events.next(m.CallStopRinging, within=5)
        assert stop.reason == "cancelled"
    assert call.reason == "hangup"
