"""The whole system in one process, as `visavis serve` runs it: parts wired together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aioice.ice
import pytest

from tests.signaling.harness import Cluster
from visavis.client.sfu_session import PatternTrack, SfuSession, ToneTrack
from visavis.clock import SystemClock
from visavis.config import Settings
from visavis.node import Node


@pytest.fixture
async def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Node]:
    # aioice gathers only 127.0.0.1: no test media leaves loopback (FIELD-NOTES).
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda *a, **k: ["127.0.0.1"])
    settings = Settings(
        data_dir=tmp_path,
        signaling={"port": 0},
        relay={"listening-port": 0, "tls-listening-port": 0},
        sfu={"port": 0, "media_port": 0, "allowed_networks": ["127.0.0.0/8"]},
    )
    node = Node(settings)
    await node.start()
    yield node
    await node.close()


async def test_serve_starts_every_part(node: Node) -> None:
    endpoints = node.endpoints()
    assert set(endpoints) == {"relay", "sfu", "signaling"}
    assert any(u.startswith("turn:") for u in endpoints["relay"])
    assert any(u.startswith("ws://") for u in endpoints["sfu"])


async def test_group_call_from_signaling_joins_the_sfu(node: Node) -> None:
    assert node.signaling is not None
    c = Cluster([node.signaling], SystemClock())
    try:
        (alice,) = await c.user("alice@example.com")
        (bob,) = await c.user("bob@example.com")
        (carol,) = await c.user("carol@example.com")
        # The relay's URLs reach devices with credentials.
        turn = [s for s in alice.welcome["ice_servers"] if s.get("username")]
        assert turn and all(u.startswith("turn:") for u in turn[0]["urls"])

        call_id = (
            await alice.ok("call.invite", handles=["bob@example.com", "carol@example.com"])
        )["call_id"]
        rooms = {"alice": await alice.expect("call.room")}
        for name, device in (("bob", bob), ("carol", carol)):
            await device.expect("call.incoming", call_id=call_id)
            await device.ok("call.answer", call_id=call_id)
            rooms[name] = await device.expect("call.room")
        assert len({r["room_id"] for r in rooms.values()}) == 1

        sessions = {
            name: SfuSession(
                room["url"], room["token"],
                audio=ToneTrack(amplitude=0.9 if name == "carol" else 0.0),
                video=PatternTrack(seed=i),
            )
            for i, (name, room) in enumerate(rooms.items())
        }
        try:
            for session in sessions.values():
                await session.join()

            def everyone_decodes_everyone() -> bool:
                return all(
                    s.frames[o.participant_id or ""]["video"] >= 3
                    and s.frames[o.participant_id or ""]["audio"] >= 3
                    for s in sessions.values()
                    for o in sessions.values()
                    if o is not s
                )

            for session in sessions.values():
                await session.wait_for(everyone_decodes_everyone, 20)
            carol_id = sessions["carol"].participant_id
            await sessions["alice"].wait_for(
                lambda: sessions["alice"].dominant_speaker == carol_id, 15
            )
        finally:
            for session in sessions.values():
                await session.close()
    finally:
        await c.close()
