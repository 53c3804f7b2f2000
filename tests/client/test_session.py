"""The device connection survives drops, and a live call survives an ICE restart."""

from __future__ import annotations

import asyncio

from tests.waiting import until
from visavis.client.call import CallStateChanged
from visavis.client.media import MediaSource
from visavis.client.session import Connected, Disconnected
from visavis.signaling import messages as m

from .conftest import Stack


async def test_reconnects_and_resumes_without_losing_events(stack: Stack) -> None:
    alice = await stack.user("alice")
    bob = await stack.user("bob")
    async with alice.events() as events:
        assert alice._ws is not None
        await alice._ws.close()  # the connection drops
        down = await events.next(Disconnected, within=5)
        assert not down.final
        call = await bob.call(alice.handle)  # rings while alice may still be away
        up = await events.next(Connected, within=10)
        assert up.reconnect and up.resumed
        incoming = await events.next(m.CallIncoming, within=10)
        assert incoming.call_id == call.id
    theirs = await alice.answer(incoming, MediaSource.test_pattern(160, 120))
    await asyncio.gather(call.wait_connected(10), theirs.wait_connected(10))
    await call.hangup()


async def test_ice_restart_keeps_the_call(stack: Stack) -> None:
    alice = await stack.user("alice")
    bob = await stack.user("bob")
    answering = asyncio.create_task(bob.next_incoming(within=10))
    call = await alice.call(bob.handle, MediaSource.test_pattern(160, 120))
    theirs = await bob.answer(await answering, MediaSource.test_pattern(160, 120))
    await asyncio.gather(call.wait_connected(10), theirs.wait_connected(10))
    await asyncio.gather(call.wait_frames(5), theirs.wait_frames(5))
    before = (call.received.video_frames, theirs.received.video_frames)
    first_path = call.path
    async with alice.events() as events:  # the restart can finish before we look again
        await call.restart_ice()
        changed = await events.next(CallStateChanged, within=5)
        assert (changed.call, changed.state) == (call, "reconnecting")
    await until(
        lambda: call.state == theirs.state == "connected", "both ends reconnected", within=10
    )
    assert call.restarts == theirs.restarts == 1
    await asyncio.gather(call.wait_frames(before[0] + 10), theirs.wait_frames(before[1] + 10))
    assert call.path is not None and first_path is not None
    assert call.path.local_address != first_path.local_address  # new sockets, new pair
    await call.hangup()
    assert await theirs.wait_ended(5) == "remote_hangup"


async def test_revoked_token_is_final(stack: Stack) -> None:
    alice = await stack.user("alice")
    import httpx

    async with alice.events() as events, httpx.AsyncClient() as http:
        r = await http.delete(
            f"{stack.url}/api/devices/{alice.device_id}",
            headers={"Authorization": f"Bearer {alice.token}"},
        )
        assert r.status_code == 204
        down = await events.next(Disconnected, within=5)
        while not down.final:
            down = await events.next(Disconnected, within=10)
    assert not alice.connected
