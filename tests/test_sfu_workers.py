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

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aioice.ice
import pytest

from tests.fleet.test_fleet_processes import Watcher, decoding_all, wait_until
from tests.served import serve
from tests.services import REDIS_URL, fresh_redis_prefix
from tests.test_processes import metric, scrape, sfu_workers
from visavis.client.session import Session
from visavis.client.sfu_session import PatternTrack, SfuSession, SfuSessionError, ToneTrack
from visavis.config import Settings
from visavis.fleet.admin import FleetAdmin
from visavis.fleet.service import Assignment, MoveReason, NoMediaNode
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
