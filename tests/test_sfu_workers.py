"""The SFU as a worker per core (docs/processes.md, "SFU workers").

On the real ``visavis serve`` (role all, embedded defaults: no Redis) with two SFU
workers and Python SDK participants: two group calls land on different workers (placed by
load); SIGKILL of one worker mid-call → it is restarted, its participants are moved to the
live worker (``call.room_moved``) and decode everyone again, while the other worker's call
goes on untouched; a token for one worker is refused by the other; the process tree and
``/metrics`` show both workers, the SFU's own series summed over them.

With a fleet registry (Redis), ``visavis serve --role sfu`` runs a worker per core by
default, each registered as a fleet node of its own (signaling places, fails over and
cascades them as any node: tests/fleet/).

Below it, the placement and failover rules of :class:`visavis.workers.WorkerFleet` on
stand-in workers (logic only: the processes are above).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import aioice.ice
import pytest
from websockets.asyncio.client import connect

from tests.fleet.test_fleet_processes import Watcher, decoding_all, wait_until
from tests.served import serve
from tests.services import REDIS_URL, fresh_redis_prefix
from tests.test_processes import metric, scrape, sfu_workers
from visavis.client.session import Session
from visavis.client.sfu_session import PatternTrack, SfuSession, SfuSessionError, ToneTrack
from visavis.config import Settings
from visavis.fleet.admin import FleetAdmin
from visavis.fleet.service import Assignment, MoveReason, NoMediaNode
from visavis.sfu.cascade import sign_hello
from visavis.signaling import messages as m
from visavis.supervision import WorkerLoad
from visavis.workers import WorkerFleet

PASSWORD = "correct horse battery"
RECOVERY_LIMIT = 30.0  # seconds from the kill to decoding again (loopback: ~1-3 s; loaded CI)


async def test_rooms_spread_over_workers_and_a_killed_worker_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aioice gathers only 127.0.0.1: no test media leaves loopback (FIELD-NOTES).
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda *a, **k: ["127.0.0.1"])
    env = {"VISAVIS_SFU__WORKERS": "2", "VISAVIS_SFU__ALLOWED_NETWORKS": '["127.0.0.0/8"]'}
    with serve(tmp_path / "data", env=env, timeout=120) as server:
        workers = sfu_workers(server.pid)
        assert sorted(workers) == ["visavis-sfu-0", "visavis-sfu-1"], workers
        urls = [u for u in server.endpoints["sfu"] if u.startswith("ws://")]
        assert len(set(urls)) == 2, server.endpoints  # a control URL (and ports) each

        handles = [f"{x}@example.com" for x in ("ann", "bo", "cy", "di", "ed", "flo")]
        sessions = [await Session.login(server.http_url, h, PASSWORD, signup=True) for h in handles]
        watchers = [Watcher(s) for s in sessions]
        media: list[SfuSession] = []
        try:
            # -- two group calls: each lands on a worker of its own (by load) ------------
            calls = []
            for first in (0, 3):
                callees = handles[first + 1 : first + 3]
                result = await sessions[first].request("call.invite", handles=callees)
                assert result.call_id is not None
                calls.append(result.call_id)
            for first, call_id in zip((0, 3), calls, strict=True):
                for i in (first + 1, first + 2):
                    await watchers[i].first(m.CallIncoming, call_id)
                    await sessions[i].request("call.answer", call_id=call_id)
            rooms = [await watchers[i].next_room(calls[i // 3]) for i in range(6)]
            placed = [urls.index(r.url) for r in rooms]
            assert placed[:3] == [placed[0]] * 3 and placed[3:] == [placed[3]] * 3, placed
            assert placed[0] != placed[3], "both calls on one worker"
            for i, room in enumerate(rooms):
                session = SfuSession(
                    room.url, room.token, audio=ToneTrack(amplitude=0.0), video=PatternTrack(seed=i)
                )
                media.append(session)
                await session.join(30)
                session.follow(sessions[i], calls[i // 3])
            killed, kept = media[:3], media[3:]
            await wait_until(lambda: decoding_all(killed, 0) and decoding_all(kept, 0), 60)

            # The join token binds the room to its worker: the other worker refuses it.
            stray = SfuSession(urls[placed[3]], rooms[0].token)
            with pytest.raises(SfuSessionError) as refused:
                await stray.join(20)
            await stray.close()
            assert refused.value.code == "unauthorized" and "another node" in str(refused.value)

            # -- SIGKILL the first call's worker mid-call --------------------------------
            part = f"sfu-{placed[0]}"
            old = workers[f"visavis-{part}"]
            os.kill(old, signal.SIGKILL)
            recovery = await wait_until(
                lambda: all(s.moves == 1 for s in killed)
                and decoding_all(killed, max(s.moved_at or 0.0 for s in killed)),
                RECOVERY_LIMIT,
            )
            print(f"SIGKILL -> the killed worker's participants decode again: {recovery:.2f} s")
            assert {s.url for s in killed} == {urls[placed[3]]}  # moved to the live worker
            for w in watchers[:3]:
                moved = w.of(m.CallRoomMoved)
                assert [e.reason for e in moved] == ["failover"]  # type: ignore[attr-defined]
                assert not w.of(m.CallEnded)
            # The other call never noticed: no move, same worker, media throughout.
            assert all(s.moves == 0 for s in kept)
            assert {s.url for s in kept} == {urls[placed[3]]}
            assert not any(w.of(m.CallRoomMoved) or w.of(m.CallEnded) for w in watchers[3:])
            now = time.monotonic()
            await wait_until(lambda: decoding_all(kept, now), 30)

            # The dead worker was replaced (a new process, same name) and shows so.
            name = f"visavis-{part}"
            await wait_until(lambda: sfu_workers(server.pid).get(name, old) != old, 60)
            assert f"the {part} process (pid {old}) was killed by SIGKILL" in server.log()
            scrape(server.http_url, f'visavis_part_restarts_total{{part="{part}"}} 1.0')
            for worker in ("sfu-0", "sfu-1"):
                await wait_until(lambda w=worker: _up(server.http_url, w), 60)
            # The SFU's own series are one sum over the workers: six participants, now all
            # on the worker that lived, in two rooms.
            text = scrape(server.http_url, "visavis_sfu_participants 6.0")
            assert metric(text, "visavis_sfu_rooms") == 2.0
            assert (metric(text, "visavis_sfu_packets_forwarded_total") or 0) > 0
        finally:
            for session in media:
                await session.close()
            for w in watchers:
                w.stop()
            for s in sessions:
                await s.close()
    assert server.process.returncode == 0, server.log()


@pytest.mark.redis
async def test_role_sfu_in_a_fleet_runs_a_worker_per_core_each_a_node(tmp_path: Path) -> None:
    secret = "fleet-secret"
    async with fresh_redis_prefix() as prefix:
        env = {
            "VISAVIS_BUS_URL": REDIS_URL, "VISAVIS_REDIS_PREFIX": prefix,
            "VISAVIS_SHARED_SECRET": secret, "VISAVIS_NODE_ID": "box",
        }  # fmt: skip
        with serve(tmp_path / "sfu", "--role", "sfu", env=env, timeout=120) as server:
            cores = len(os.sched_getaffinity(server.pid))
            expected = ["box"] if cores == 1 else [f"box-{i}" for i in range(cores)]
            assert len(sfu_workers(server.pid)) == (cores if cores > 1 else 0)
            admin = FleetAdmin(
                Settings(data_dir=tmp_path / "admin", bus_url=REDIS_URL, redis_prefix=prefix,
                         shared_secret=secret)
            )  # fmt: skip
            try:
                nodes = (await admin.view()).nodes
                assert sorted(n.node_id for n in nodes) == expected, nodes
                assert len({n.control_url for n in nodes}) == cores  # a control URL each
                assert len({m for n in nodes for m in n.media}) == 2 * cores  # UDP, ICE-TCP
                assert sorted(n.control_url for n in nodes) == sorted(
                    u for u in server.endpoints["sfu"] if u.startswith("ws://")
                )
            finally:
                await admin.close()


def _up(url: str, part: str) -> bool:
    text = scrape(url, "visavis_part_up")
    return metric(text, f'visavis_part_up{{part="{part}"}}') == 1.0


# -- WorkerFleet's rules, on stand-in workers ------------------------------------------


@dataclass
class FakeWorker:
    node_id: str
    control_url: str | None
    running: bool = True
    load: WorkerLoad | None = None
    listeners: list[Callable[[bool], None]] = field(default_factory=list)

    def tell(self, up: bool) -> None:
        self.running = up
        for listener in self.listeners:
            listener(up)


async def _fleet(count: int) -> tuple[WorkerFleet, list[FakeWorker], list[Assignment]]:
    workers = [FakeWorker(f"n-{i}", f"ws://w{i}/sfu") for i in range(count)]
    fleet = WorkerFleet(workers, capacity=130)
    moves: list[Assignment] = []

    async def moved(assignment: Assignment, reason: MoveReason) -> None:
        assert reason == "failover"
        moves.append(assignment)

    await fleet.start(moved)
    return fleet, workers, moves


async def test_rooms_go_to_the_least_loaded_worker() -> None:
    fleet, workers, _ = await _fleet(2)
    a = await fleet.assign("a")
    b = await fleet.assign("b")
    assert {a.node_id, b.node_id} == {"n-0", "n-1"}  # a placement counts before reports
    assert await fleet.assign("a") == a  # sticky
    # Worker 0 reports a busy core, worker 1 many people: the CPU-bound one is avoided.
    workers[0].load = WorkerLoad(rooms=1, participants=4, cpu=0.8)
    workers[1].load = WorkerLoad(rooms=1, participants=20, cpu=0.1)
    assert (await fleet.assign("c")).node_id == "n-1"
    await fleet.release("c")
    assert "c" not in fleet.placed


async def test_a_dead_workers_rooms_move_and_come_back_when_it_was_the_only_one() -> None:
    fleet, workers, moves = await _fleet(2)
    rooms = {r: (await fleet.assign(r)).node_id for r in "abcd"}
    on_0 = sorted(r for r, n in rooms.items() if n == "n-0")
    workers[0].tell(False)
    await fleet.idle()
    assert sorted(a.room_id for a in moves) == on_0
    assert {a.node_id for a in moves} == {"n-1"} and {a.url for a in moves} == {"ws://w1/sfu"}
    assert (await fleet.assign("e")).node_id == "n-1"  # no new room on a dead worker

    one, (only,), alone = await _fleet(1)
    await one.assign("x")
    only.tell(False)
    await one.idle()
    assert alone == []  # nowhere to go: it waits for the restart
    with pytest.raises(NoMediaNode):
        await one.assign("y")
    only.control_url = "ws://w0-new/sfu"  # port 0: the new process has new ports
    only.tell(True)
    await one.idle()
    assert [(a.room_id, a.url) for a in alone] == [("x", "ws://w0-new/sfu")]


# -- a room bigger than one worker: an overflow leg, cascaded between the workers -----


async def test_a_full_workers_room_overflows_to_another_worker_over_the_cascade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fleet.capacity 2: the call's first two participants fill its worker (by the
    worker's own report), the next two join the room's overflow leg on the other worker,
    and the two workers link over the fleet's cascade: everyone decodes everyone, media
    crossing between the workers both ways. A link hello from a worker the parent never
    vouched for, or not signed with the server's secret, is refused and counted."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda *a, **k: ["127.0.0.1"])
    env = {
        "VISAVIS_SFU__WORKERS": "2",
        "VISAVIS_SFU__ALLOWED_NETWORKS": '["127.0.0.0/8"]',
        "VISAVIS_FLEET__CAPACITY": "2",
        "VISAVIS_NODE_ID": "box",  # the workers are box-0 and box-1
    }
    with serve(tmp_path / "data", env=env, timeout=120) as server:
        urls = [u for u in server.endpoints["sfu"] if u.startswith("ws://")]
        assert len(set(urls)) == 2, server.endpoints
        handles = [f"{x}@example.com" for x in ("gil", "hal", "ivy", "jo")]
        sessions = [await Session.login(server.http_url, h, PASSWORD, signup=True) for h in handles]
        watchers = [Watcher(s) for s in sessions]
        media: list[SfuSession] = []

        async def join(i: int, room: m.CallRoom) -> SfuSession:
            session = SfuSession(
                room.url, room.token, audio=ToneTrack(amplitude=0.0), video=PatternTrack(seed=i)
            )
            media.append(session)
            await session.join(30)
            session.follow(sessions[i], call_id)
            return session

        try:
            result = await sessions[0].request("call.invite", handles=handles[1:])
            call_id = result.call_id
            assert call_id is not None
            for i in (1, 2, 3):
                await watchers[i].first(m.CallIncoming, call_id)
            # -- two participants fill the room's worker --------------------------------
            await sessions[1].request("call.answer", call_id=call_id)
            home = [await watchers[i].next_room(call_id) for i in (0, 1)]
            assert home[0].url == home[1].url
            first = [await join(i, room) for i, room in enumerate(home)]
            await wait_until(lambda: decoding_all(first, 0), 60)
            index = urls.index(home[0].url)
            part = f"sfu-{index}"
            # Readiness: the worker's report (what placement reads) says it is full.
            scrape(server.http_url, f'visavis_sfu_worker_participants{{part="{part}"}} 2.0')

            # -- the next two join the room's overflow leg on the other worker ----------
            answered = time.monotonic()
            for i in (2, 3):
                await sessions[i].request("call.answer", call_id=call_id)
            legs = [await watchers[i].next_room(call_id) for i in (2, 3)]
            assert {r.url for r in legs} == set(urls) - {home[0].url}, (home, legs)
            for i, room in zip((2, 3), legs, strict=True):
                await join(i, room)
            # Every participant decodes every other: media crosses the workers both ways.
            await wait_until(lambda: decoding_all(media, answered), 60)
            print(f"answer -> overflow participants decoded by all, all by them: "
                  f"{time.monotonic() - answered:.2f} s")  # fmt: skip
            for s in media:
                assert len(s.participants) == 3, s.participants
            assert all(s.moves == 0 for s in media)
            assert not any(w.of(m.CallRoomMoved) or w.of(m.CallEnded) for w in watchers)
            text = scrape(server.http_url, "visavis_sfu_rooms 2.0")  # the room on each
            assert metric(text, "visavis_sfu_participants") == 4.0  # local ones, summed

            # -- link hellos from no worker, or forged: refused and counted -------------
            secret = (tmp_path / "data" / "shared-secret").read_text().strip()
            stranger = sign_hello(secret, "box-9", f"box-{index}", "nonce-1", now=time.time())
            forged = sign_hello("not-the-secret", "x", "y", "nonce-2", now=time.time())
            for hello in (stranger, forged):
                async with connect(home[0].url) as ws:
                    await ws.send(json.dumps({"type": "cascade", "token": hello}))
                    reply = json.loads(await ws.recv())
                assert reply["code"] == "unauthorized", reply
            text = scrape(
                server.http_url,
                'visavis_sfu_cascade_refused_total{reason="unknown_node"} 1.0',
                'visavis_sfu_cascade_refused_total{reason="forged"} 1.0',
            )
            since = time.monotonic()  # the call's media kept flowing meanwhile
            await wait_until(lambda: decoding_all(media, since), 30)
        finally:
            for session in media:
                await session.close()
            for w in watchers:
                w.stop()
            for s in sessions:
                await s.close()
    assert server.process.returncode == 0, server.log()


async def test_a_full_workers_room_gets_an_overflow_leg_on_another_worker() -> None:
    fleet, workers, moves = await _fleet(3)
    fleet.capacity = 4
    home = await fleet.assign("r")
    h = int(home.node_id.removeprefix("n-"))  # type: ignore[union-attr]
    assert home.peers == () and home.key is None
    # Full by its own report (people there, or its CPU): the next one joins a leg.
    workers[h].load = WorkerLoad(rooms=1, participants=4)
    leg = await fleet.assign("r")
    assert leg.node_id != home.node_id and leg.room_id == "r" and leg.key == "r~overflow"
    assert leg.peers == (home.node_id,)  # the token names the room's other worker
    assert await fleet.assign("r") == leg  # one leg per room, sticky
    workers[h].load = WorkerLoad(rooms=1, participants=1, cpu=0.9)
    assert await fleet.assign("r") == leg
    # Room again on the first worker: its newcomers link to the leg's worker.
    workers[h].load = WorkerLoad(rooms=1, participants=3)
    assert await fleet.assign("r") == replace(home, peers=(leg.node_id,))
    # The leg's worker dies: the leg moves (its devices only), naming the first worker.
    await fleet.bind("r", "dev-a", "r")
    await fleet.bind("r", "dev-b", "r~overflow")
    assert await fleet.bound("r") == {"dev-a": "r", "dev-b": "r~overflow"}
    workers[int(leg.node_id.removeprefix("n-"))].tell(False)  # type: ignore[union-attr]
    await fleet.idle()
    (moved,) = moves
    assert moved.key == "r~overflow" and moved.peers == (home.node_id,)
    assert moved.node_id not in (home.node_id, leg.node_id)
    await fleet.release("r")
    assert fleet.placed == {} and await fleet.bound("r") == {}


async def test_no_leg_when_every_other_worker_is_full_or_cascading_is_off() -> None:
    fleet, workers, _ = await _fleet(2)
    fleet.capacity = 2
    home = await fleet.assign("r")
    for w in workers:
        w.load = WorkerLoad(rooms=1, participants=2)
    assert await fleet.assign("r") == home  # nowhere with room: stays on its worker
    off, others, _ = await _fleet(2)
    off.capacity, off.cascade = 2, False
    first = await off.assign("r")
    others[int(first.node_id.removeprefix("n-"))].load = WorkerLoad(rooms=1, participants=2)  # type: ignore[union-attr]
    assert await off.assign("r") == first
