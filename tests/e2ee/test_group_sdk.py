"""Python SDK bots in an end-to-end encrypted group call through the real node.

Signaling, relay and SFU run as `visavis serve` wires them (one Node in process); three
bots sign in, publish their identity keys, ring each other into a group call, agree
keys over `call.e2ee` (signed, pairwise encrypted; the server only relays) and decode
each other's SFrame-encrypted media through the SFU. A signaling server modified in the
test to substitute a call key is caught: the victim's device stops the call.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from visavis.client.e2ee import GroupE2ee, device_keys, enable_e2ee, publish_identity
from visavis.client.media import MediaSource
from visavis.client.session import Session
from visavis.client.sfu_session import PatternTrack, SfuSession, ToneTrack
from visavis.config import Settings
from visavis.e2ee.identity import DeviceIdentity, Pins, b64
from visavis.node import Node
from visavis.signaling import messages as m
from visavis.signaling.calls import CallService

pytestmark = pytest.mark.interop
PASSWORD = "correct horse battery"


def node_settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        signaling={"port": 0},
        relay={"listening-port": 0, "tls-listening-port": 0},
        # dead_timeout: a loaded machine can stall a bot for seconds (see conftest.py).
        sfu={"port": 0, "media_port": 0, "allowed_networks": ["127.0.0.0/8"], "dead_timeout": 30.0},
    )


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    node = Node(node_settings(tmp_path))
    await node.start()
    yield node
    await node.close()


class Bot:
    def __init__(self, session: Session, identity: DeviceIdentity, pins: Pins) -> None:
        self.session, self.identity, self.pins = session, identity, pins
        self.events = session.events()
        self.e2ee: GroupE2ee | None = None
        self.sfu: SfuSession | None = None

    async def enter(self, call_id: str, index: int, loud: bool = False) -> None:
        room = await self.events.next(m.CallRoom, 30)
        self.e2ee = GroupE2ee(self.session, call_id, self.identity, self.pins)
        await self.e2ee.start()
        self.sfu = SfuSession(
            room.url,
            room.token,
            audio=ToneTrack(0.9 if loud else 0.0),
            video=PatternTrack(seed=index),
            keyring=self.e2ee.keyring,
        )
        await self.sfu.join()

    async def close(self) -> None:
        if self.sfu is not None:
            await self.sfu.close()
        if self.e2ee is not None:
            await self.e2ee.close()
        self.events.close()
        await self.session.close()


async def bots(node: Node, tmp_path: Path, names: list[str]) -> list[Bot]:
    assert node.signaling is not None
    return await bots_at(str(node.signaling.url), tmp_path, names)


async def bots_at(url: str, tmp_path: Path, names: list[str]) -> list[Bot]:
    """Signed-up SDK devices of signaling at ``url``, identity keys published."""
    out = []
    for name in names:
        session = await Session.login(
            url,
            f"{name}@example.com",
            PASSWORD,
            signup=True,
            host_addresses=["127.0.0.1"],
        )
        identity = DeviceIdentity.generate()
        await publish_identity(session, identity)
        out.append(Bot(session, identity, Pins(tmp_path / f"{name}-pins.json")))
    return out


async def start_call(group: list[Bot]) -> str:
    caller, *callees = group
    handles = [b.session.handle for b in callees]
    call_id = (await caller.session.request("call.invite", handles=handles)).call_id
    assert call_id is not None
    for bot in callees:
        await bot.events.next(m.CallIncoming, 30)
        await bot.session.request("call.answer", call_id=call_id)
    return call_id


def decodes(a: Bot, b: Bot, n: int = 5) -> bool:
    assert a.sfu is not None and b.sfu is not None
    counts = a.sfu.frames[b.sfu.participant_id or ""]
    return counts["video"] >= n and counts["audio"] >= n


async def test_bots_decode_each_other_in_an_encrypted_group_call(
    node: Node, tmp_path: Path
) -> None:
    group = await bots(node, tmp_path, ["alice", "bob", "carol"])
    try:
        # Signaling hands out public halves only, set once per device.
        alice, bob, carol = group
        assert (await device_keys(alice.session, bob.session.handle)) == {
            bob.session.device_id: bob.identity.public
        }
        call_id = await start_call(group)
        for i, bot in enumerate(group):
            await bot.enter(call_id, i, loud=bot is carol)
        for a in group:
            for b in group:
                if a is not b:
                    assert a.sfu is not None
                    await a.sfu.wait_for(lambda a=a, b=b: decodes(a, b), 60)
        codes = {b.e2ee.verification_code for b in group if b.e2ee is not None}
        assert len(codes) == 1
        for bot in group:
            assert bot.e2ee is not None and not bot.e2ee.alerts and not bot.e2ee.stopped
            assert bot.e2ee.keyring.stats.decrypted > 20
            assert len(bot.e2ee.keys.peers) == 2
    finally:
        for bot in group:
            await bot.close()


async def test_substituted_call_key_stops_the_call(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mallory = DeviceIdentity.generate()
    relay = CallService.e2ee

    async def substitute(self: CallService, user: Any, device: Any, msg: m.CallE2ee) -> None:
        body = json.loads(msg.payload)
        if body.get("kind") == "announce" and user.handle.startswith("bob"):
            body["eph"] = b64(mallory.public)  # the server swaps bob's call key
            msg = msg.model_copy(update={"payload": json.dumps(body)})
        await relay(self, user, device, msg)

    monkeypatch.setattr(CallService, "e2ee", substitute)
    group = await bots(node, tmp_path, ["alice", "bob", "carol"])
    alice, bob, carol = group
    try:
        call_id = await start_call(group)
        for i, bot in enumerate(group):
            await bot.enter(call_id, i)
        assert alice.sfu is not None and alice.e2ee is not None
        # Alice sees bob's announce with a key bob did not sign: she stops the call.
        await alice.sfu.wait_for(lambda: alice.e2ee is not None and alice.e2ee.stopped, 30)
        assert [a.reason for a in alice.e2ee.alerts] == ["announce_signature"]
        assert not decodes(alice, bob, 1)
        # Bob is told why (a signed alert) and stops too: the warning is on both sides.
        assert bob.sfu is not None and bob.e2ee is not None
        await bob.sfu.wait_for(lambda: bob.e2ee is not None and bob.e2ee.stopped, 30)
        assert [(a.reason, a.detail) for a in bob.e2ee.alerts] == [
            ("peer_alert", "announce_signature")
        ]
        # Carol either caught the swap herself or saw bob leave first: never bob's media.
        assert carol.e2ee is not None
        assert [a.reason for a in carol.e2ee.alerts] in ([], ["announce_signature"])
        assert not decodes(carol, bob, 1)
    finally:
        for bot in group:
            await bot.close()


async def one_to_one(node: Node, tmp_path: Path) -> tuple[Bot, Bot]:
    """Two SDK devices with identities enabled for 1:1 calls (signed fingerprints)."""
    pair = await bots(node, tmp_path, ["dora", "eric"])
    for bot in pair:
        await enable_e2ee(bot.session, bot.identity, bot.pins)
    return pair[0], pair[1]


async def test_sdk_one_to_one_signs_and_checks_dtls_fingerprints(
    node: Node, tmp_path: Path
) -> None:
    dora, eric = await one_to_one(node, tmp_path)
    try:
        call = await dora.session.call(eric.session.handle, MediaSource.test_pattern())
        incoming = await eric.events.next(m.CallIncoming, 30)
        answered = await eric.session.answer(incoming, MediaSource.test_pattern())
        await call.wait_connected(30)
        await answered.wait_connected(30)
        await call.wait_frames(5, 30)
        assert call.e2ee is not None and answered.e2ee is not None
        # Each checked the other's signed fingerprint: same code, no alert.
        assert call.e2ee.keys.alerts == [] and answered.e2ee.keys.alerts == []
        assert call.e2ee.verification_code == answered.e2ee.verification_code
        await call.hangup()
    finally:
        for bot in (dora, eric):
            await bot.close()


async def test_sdk_one_to_one_swapped_fingerprint_stops_both(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    relay = CallService.signal

    async def swap(self: CallService, user: Any, device: Any, msg: m.CallSignal) -> None:
        if msg.description is not None:  # the server's own certificate in the SDP
            sdp = re.sub(
                r"a=fingerprint:sha-256 \S+",
                "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
                msg.description.sdp,
            )
            description = msg.description.model_copy(update={"sdp": sdp})
            msg = msg.model_copy(update={"description": description})
        await relay(self, user, device, msg)

    monkeypatch.setattr(CallService, "signal", swap)
    dora, eric = await one_to_one(node, tmp_path)
    try:
        call = await dora.session.call(eric.session.handle, MediaSource.test_pattern())
        incoming = await eric.events.next(m.CallIncoming, 30)
        answered = await eric.session.answer(incoming, MediaSource.test_pattern())
        # Eric sees an offer whose fingerprint dora did not sign: he stops, tells dora.
        assert await answered.wait_ended(30) == "e2ee"
        assert "fingerprint_mismatch" in answered.detail
        # Dora is told it was a security stop (his signed alert), never a plain hang-up.
        assert await call.wait_ended(30) == "e2ee"
        assert "fingerprint_mismatch" in call.detail
        assert call.connected_at is None and answered.connected_at is None
    finally:
        for bot in (dora, eric):
            await bot.close()
