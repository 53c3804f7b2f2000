"""The media plane as a fleet, with the real processes: 2 signaling nodes and 3 SFU nodes
(``visavis serve --role ...``) on PostgreSQL and Redis, aiortc participants.

Group calls land on different SFU nodes; an SFU node killed with SIGKILL mid-call → the
participants report the lost node and the room moves at once; every participant decodes
everyone again within 5 s on another node, with no ring and no hang-up,
and history shows one call; a token for the room's old node is refused elsewhere; an
operator drains the node the room moved to (``visavis sfu drain``) → the room moves again
and the drained node empties.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aioice.ice
import httpx
import pytest

from tests.fleet.cluster import SECRET, Fleet, fleet
from tests.services import fresh_postgres, fresh_redis_prefix
from visavis.client.session import Session
from visavis.client.sfu_session import PatternTrack, SfuSession, SfuSessionError, ToneTrack
from visavis.config import Settings
from visavis.fleet.admin import FleetAdmin
from visavis.signaling import messages as m

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

PASSWORD = "correct horse battery"
RECOVERY_LIMIT = 5.0  # seconds from the kill to every participant decoding everyone again


class Watcher:
    """Every signaling event one device receives (to prove nothing rang or ended)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.events: list[object] = []
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async with self.session.events() as events:
            async for event in events:
                self.events.append(event)

    def of(self, kind: type) -> list[object]:
        return [e for e in self.events if isinstance(e, kind)]

    async def first(self, kind: type, call_id: str, limit: float = 20) -> Any:
        """The first event of ``kind`` about ``call_id`` (received before or after)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            for e in self.of(kind):
                if getattr(e, "call_id", None) == call_id:
                    return e
            await asyncio.sleep(0.05)  # polling a list filled by the event task
        raise TimeoutError(f"no {kind.__name__} for {call_id}")

    async def next_room(self, call_id: str) -> m.CallRoom:
        room: m.CallRoom = await self.first(m.CallRoom, call_id)
        return room

    def stop(self) -> None:
        self._task.cancel()


@contextlib.asynccontextmanager
async def login(fleet_: Fleet, handles: list[str]) -> AsyncIterator[list[Session]]:
    sessions: list[Session] = []
    try:
        for i, handle in enumerate(handles):
            url = fleet_.signaling[i % len(fleet_.signaling)].http_url
            sessions.append(await Session.login(url, handle, PASSWORD, signup=True))
        yield sessions
    finally:
        for s in sessions:
            await s.close()


async def signup(url: str, handles: list[str]) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        for handle in handles:
            r = await http.post(f"{url}/api/signup", json={"handle": handle, "password": PASSWORD})
            assert r.status_code in (201, 409), r.text


def decoding_all(sessions: list[SfuSession], since: float) -> bool:
    """Every session got a video frame from every other one after ``since``."""
    return all(
        s.last_frame[o.participant_id or ""].get("video", 0.0) > since
        for s in sessions
        for o in sessions
        if o is not s
    )


async def wait_until(predicate: object, limit: float) -> float:
    """Seconds until ``predicate()`` held (re-checked every 20 ms); TimeoutError after."""
    assert callable(predicate)
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > limit:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.02)  # polling frame timestamps the sessions update
    return time.monotonic() - start


async def test_rooms_spread_fail_over_and_drain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda *a, **k: ["127.0.0.1"])
    async with fresh_postgres() as db, fresh_redis_prefix() as prefix:
        with fleet(tmp_path, db, prefix) as f:
            settings = Settings(
                data_dir=tmp_path / "admin", bus_url=f.env["VISAVIS_BUS_URL"],
                redis_prefix=prefix, shared_secret=SECRET,
            )
            admin = FleetAdmin(settings)
            try:
                await _scenario(f, admin)
            finally:
                await admin.close()


STARTED: list[float] = []


def stage(name: str) -> None:
    """Print how far the scenario got (pytest shows it when the test fails)."""
    if not STARTED:
        STARTED.append(time.monotonic())
    print(f"{time.monotonic() - STARTED[0]:7.2f} s  {name}", flush=True)


async def _scenario(f: Fleet, admin: FleetAdmin) -> None:
    stage("fleet started")
    view = await admin.view()
    assert sorted(n.node_id for n in view.nodes) == sorted(f.sfu)

    # -- placement: three group calls land on three different nodes ---------------------
    await signup(f.signaling[0].http_url, [f"{x}@example.com" for x in "efhi"])
    async with login(f, ["alice@example.com", "bob@example.com", "carol@example.com",
                         "dave@example.com", "gina@example.com"]) as sessions:
        alice, bob, carol, dave, gina = sessions
        watchers = [Watcher(s) for s in sessions]
        try:
            call_id = (await alice.request(
                "call.invite", handles=["bob@example.com", "carol@example.com"])).call_id
            assert call_id is not None
            others = [
                (await caller.request("call.invite", handles=callees)).call_id
                for caller, callees in (
                    (dave, ["e@example.com", "f@example.com"]),
                    (gina, ["h@example.com", "i@example.com"]),
                )
            ]
            rooms = [await watchers[0].next_room(call_id)]
            rooms += [await w.next_room(c or "") for w, c in zip(watchers[3:], others, strict=True)]
            nodes = [f.node_of(r.url) for r in rooms]
            assert sorted(nodes) == sorted(f.sfu), nodes  # one room on each node

            stage("three rooms placed on three nodes")
            # -- a group call with media on one node ---------------------------------
            for s, w in ((bob, watchers[1]), (carol, watchers[2])):
                await w.first(m.CallIncoming, call_id)
                await s.request("call.answer", call_id=call_id)
            joins = [await w.next_room(call_id) for w in watchers[:3]]
            first_node = f.node_of(joins[0].url)
            media = [
                SfuSession(
                    j.url, j.token, audio=ToneTrack(amplitude=0.0), video=PatternTrack(seed=i)
                )
                for i, j in enumerate(joins)
            ]
            try:
                for session, device in zip(media, (alice, bob, carol), strict=True):
                    await session.join(20)
                    session.follow(device, call_id)
                await wait_until(lambda: decoding_all(media, 0.0), 30)
                stage("everyone decodes everyone")

                # -- SIGKILL the node: everyone decodes everyone again within 5 s -------
                f.sfu[first_node].process.kill()  # recovery is timed from here
                # Frames decoded from packets buffered before the kill do not count: only
                # media from the new node, after every session moved there.
                recovery = await wait_until(
                    lambda: all(s.moves == 1 for s in media)
                    and decoding_all(media, max(s.moved_at or 0.0 for s in media)),
                    30,
                )
                stage(f"node killed: media back after {recovery:.2f} s")
                assert all(s.moves == 1 for s in media)
                second_node = f.node_of(media[0].url)
                assert second_node != first_node
                assert {f.node_of(s.url) for s in media} == {second_node}
                assert recovery < RECOVERY_LIMIT, f"media resumed after {recovery:.2f} s"
                # The participants' reports of the lost node moved the room (before the
                # node's record expired), not the registry TTL.
                acted = 0.0
                async with httpx.AsyncClient(timeout=10) as http:
                    for node in f.signaling:
                        text = (await http.get(f"{node.http_url}/metrics")).text
                        acted += sum(
                            float(line.rsplit(" ", 1)[1])
                            for line in text.splitlines()
                            if line.startswith(
                                'visavis_fleet_media_lost_reports_total{outcome="acted"}'
                            )
                        )
                assert acted == 1, acted
                for w in watchers[:3]:
                    moved = w.of(m.CallRoomMoved)
                    assert [e.reason for e in moved] == ["failover"]  # type: ignore[attr-defined]
                    assert not w.of(m.CallEnded)
                rings = [e for w in watchers[1:3] for e in w.of(m.CallIncoming)]
                assert len(rings) == 2  # the first ring only, one per callee

                # A token for the room's node is refused by any other node (and counted).
                third = next(n for n in f.sfu if n not in (first_node, second_node))
                stray = SfuSession(f.sfu[third].sfu_url, media[0].token)
                with pytest.raises(SfuSessionError) as refused:
                    await stray.join(10)
                await stray.close()
                assert refused.value.code == "unauthorized"
                assert "another node" in str(refused.value)

                stage("token for another node refused")
                # -- drain the node the room is on: it moves again, the node empties ---
                result = f.cli("sfu", "drain", second_node, "--wait", "30")
                assert result.returncode == 0, result.stdout + result.stderr
                assert "drained" in result.stdout
                await wait_until(
                    lambda: all(s.moves == 2 for s in media)
                    and decoding_all(media, max(s.moved_at or 0.0 for s in media)),
                    30,
                )
                assert {f.node_of(s.url) for s in media} == {third}

                async def drained_empty() -> bool:
                    node = (await admin.view()).node(second_node)
                    return node is not None and node.draining and node.participants == 0

                deadline = time.monotonic() + 20
                while not await drained_empty():
                    assert time.monotonic() < deadline, "the drained node never emptied"
                    await asyncio.sleep(0.2)  # polling the node's heartbeat records
                assert await admin.registry.rooms_on(second_node) == []
                stage("drained node empty")
            finally:
                for session in media:
                    await session.close()

            # -- history: one call, answered, and still live until hung up -----------
            async with httpx.AsyncClient(timeout=10) as http:
                r = await http.get(
                    f"{alice.url}/api/calls",
                    headers={"authorization": f"Bearer {alice.token}"},
                )
            entries = [e for e in r.json() if e["call_id"] == call_id]
            assert len(entries) == 1 and entries[0]["state"] == "ongoing", entries
            await alice.request("call.leave", call_id=call_id)
            await bob.request("call.leave", call_id=call_id)
            deadline = time.monotonic() + 10
            while await admin.registry.room_node(call_id) is not None:
                assert time.monotonic() < deadline, "the ended call's room was never released"
                await asyncio.sleep(0.1)  # polling Redis for the released placement
        finally:
            for w in watchers:
                w.stop()
