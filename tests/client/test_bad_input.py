"""A peer that sends a malformed SDP, invalid candidates or goes silent mid-setup.

Each time the SDK side fails the call with a specific reason within a bounded time, the
peer's device sees the call end, and both devices place the next call successfully.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.signaling.harness import Device
from visavis.client.call import Call
from visavis.client.errors import CallFailed
from visavis.client.media import MediaSource
from visavis.client.session import Session

from .conftest import PASSWORD, Stack

SETUP_TIMEOUT = 3.0
BOUND = 6.0  # every failure below is reported within this many seconds


async def raw_device(stack: Stack, handle: str) -> Device:
    """A bare WebSocket device that says only what the test makes it say."""
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{stack.url}/api/signup", json={"handle": handle,
                                                             "password": PASSWORD})
        assert r.status_code == 201, r.text
        r = await http.post(f"{stack.url}/api/login", json={
            "handle": handle, "password": PASSWORD, "device_name": "raw", "device_kind": "bot"})
        body = r.json()
    device = Device(stack.url, body["token"], body["device"]["id"], handle)
    welcome = await device.connect()
    assert welcome["type"] == "welcome"
    return device


async def call_and_answer(caller: Session, callee: Session) -> tuple[Call, Call]:
    answering = asyncio.create_task(callee.next_incoming(within=10))
    await asyncio.sleep(0)
    call = await caller.call(callee.handle, MediaSource.test_pattern(160, 120))
    theirs = await callee.answer(await answering, MediaSource.test_pattern(160, 120))
    return call, theirs


async def assert_next_call_works(a: Session, b: Session) -> None:
    call, theirs = await call_and_answer(a, b)
    await asyncio.gather(call.wait_connected(10), theirs.wait_connected(10))
    await asyncio.gather(call.wait_frames(3), theirs.wait_frames(3))
    await call.hangup()


async def expect_failure(call: Call, reason: str) -> float:
    start = time.monotonic()
    with pytest.raises(CallFailed) as info:
        await call.wait_connected(BOUND)
    assert info.value.reason == reason, (info.value.reason, info.value.detail)
    assert call.state == "failed"
    return time.monotonic() - start


@pytest.mark.parametrize("sdp", ["v=0\r\ngarbage\r\n", "", "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
                                 "a=ice-ufrag:x\r\na=fingerprint:sha-256 nope\r\n"])
async def test_malformed_answer_from_raw_callee(stack: Stack, sdp: str) -> None:
    alice = await stack.user("alice", setup_timeout=SETUP_TIMEOUT)
    bob = await raw_device(stack, "rawbob@example.com")
    call = await alice.call(bob.handle, MediaSource.test_pattern(160, 120))
    incoming = await bob.expect("call.incoming")
    await bob.ok("call.answer", call_id=incoming["call_id"])
    offer = await bob.expect("call.signal", within=5)
    assert offer["description"]["type"] == "offer"
    assert "a=candidate" not in offer["description"]["sdp"]  # candidates trickle separately
    await bob.ok("call.signal", call_id=call.id, description={"type": "answer", "sdp": sdp})
    assert await expect_failure(call, "bad_sdp") < BOUND
    await bob.expect("call.ended", call_id=call.id, reason="hangup")
    carol = await stack.user("carol")
    await assert_next_call_works(alice, carol)


async def test_malformed_offer_from_raw_caller(stack: Stack) -> None:
    alice = await raw_device(stack, "rawalice@example.com")
    bob = await stack.user("bob", setup_timeout=SETUP_TIMEOUT)
    answering = asyncio.create_task(bob.next_incoming(within=10))
    result = await alice.ok("call.invite", handles=[bob.handle])
    theirs = await bob.answer(await answering)
    await alice.expect("call.participant", state="joined")
    await alice.ok("call.signal", call_id=result["call_id"],
                   description={"type": "offer", "sdp": "v=0\r\nm=audio 0 RTP/AVP 0\r\n"})
    assert await expect_failure(theirs, "bad_sdp") < BOUND
    await alice.expect("call.ended", reason="hangup")
    carol = await stack.user("carol")
    await assert_next_call_works(bob, carol)


async def test_invalid_candidates_fail_both_sides(stack: Stack) -> None:
    alice = await stack.user("alice", setup_timeout=SETUP_TIMEOUT)
    bob = await stack.user("bob", setup_timeout=SETUP_TIMEOUT)
    real_send: Callable[..., Any] = alice.send_signal

    async def corrupt(call_id: str, **fields: Any) -> None:
        if fields.get("candidate") and fields["candidate"]["candidate"]:
            fields["candidate"] = {**fields["candidate"],
                                   "candidate": "candidate:x 1 udp 1 not-an-ip 70000 typ host"}
        await real_send(call_id, **fields)

    alice.send_signal = corrupt  # type: ignore[method-assign]
    call, theirs = await call_and_answer(alice, bob)
    assert await expect_failure(theirs, "bad_candidate") < BOUND
    assert await expect_failure(call, "peer_left") < BOUND
    alice.send_signal = real_send  # type: ignore[method-assign]
    await assert_next_call_works(alice, bob)
    await assert_next_call_works(bob, alice)


async def test_corrupted_sdp_between_sdk_devices(stack: Stack) -> None:
    alice = await stack.user("alice", setup_timeout=SETUP_TIMEOUT)
    bob = await stack.user("bob", setup_timeout=SETUP_TIMEOUT)
    real_send: Callable[..., Any] = alice.send_signal

    async def corrupt(call_id: str, **fields: Any) -> None:
        if fields.get("description"):
            sdp = fields["description"]["sdp"].replace("a=fingerprint:", "a=fingerprint:x")
            fields["description"] = {**fields["description"], "sdp": sdp.replace("m=", "m=X")}
        await real_send(call_id, **fields)

    alice.send_signal = corrupt  # type: ignore[method-assign]
    call, theirs = await call_and_answer(alice, bob)
    assert await expect_failure(theirs, "bad_sdp") < BOUND
    assert await expect_failure(call, "peer_left") < BOUND
    alice.send_signal = real_send  # type: ignore[method-assign]
    await assert_next_call_works(alice, bob)


async def test_silent_callee_times_out(stack: Stack) -> None:
    alice = await stack.user("alice", setup_timeout=SETUP_TIMEOUT)
    bob = await raw_device(stack, "silentbob@example.com")
    call = await alice.call(bob.handle, MediaSource.test_pattern(160, 120))
    incoming = await bob.expect("call.incoming")
    await bob.ok("call.answer", call_id=incoming["call_id"])
    elapsed = await expect_failure(call, "setup_timeout")
    assert SETUP_TIMEOUT - 0.5 < elapsed < BOUND
    await bob.expect("call.ended", call_id=call.id, reason="hangup")
    carol = await stack.user("carol")
    await assert_next_call_works(alice, carol)


async def test_silent_caller_times_out(stack: Stack) -> None:
    alice = await raw_device(stack, "silentalice@example.com")
    bob = await stack.user("bob", setup_timeout=SETUP_TIMEOUT)
    answering = asyncio.create_task(bob.next_incoming(within=10))
    await alice.ok("call.invite", handles=[bob.handle])
    theirs = await bob.answer(await answering)
    await expect_failure(theirs, "setup_timeout")
    await alice.expect("call.ended", reason="hangup")
    carol = await stack.user("carol")
    await assert_next_call_works(carol, bob)


async def test_peer_goes_silent_after_offer(stack: Stack) -> None:
    """The callee answers the ring, receives the offer, then never says anything again."""
    alice = await stack.user("alice", setup_timeout=SETUP_TIMEOUT)
    bob = await stack.user("bob", setup_timeout=30)
    real_send: Callable[..., Any] = bob.send_signal

    async def silent(call_id: str, **fields: Any) -> None:
        return None

    bob.send_signal = silent  # type: ignore[method-assign]
    call, theirs = await call_and_answer(alice, bob)
    await expect_failure(call, "setup_timeout")
    assert await expect_failure(theirs, "peer_left") < BOUND
    bob.send_signal = real_send  # type: ignore[method-assign]
    await assert_next_call_works(bob, alice)
