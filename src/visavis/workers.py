"""Rooms over the SFU workers of one ``visavis serve``: the fleet of the embedded defaults.

Without a fleet registry (no Redis), signaling places each group room on one of its own
SFU worker processes (:class:`visavis.supervisor.SfuWorkers`) by the fleet's placement
rule (:mod:`visavis.fleet.placement`: the least utilised, counting rooms placed since the
worker's last load report), and the join token names the worker (``node``), so another
worker refuses it. The supervisor tells it when a worker dies: each of that worker's rooms
moves at once to the least loaded live worker (or, when there is none, back to the same
worker once it runs again), and its devices hear ``call.room_moved`` as for a fleet
failover (docs/fleet.md): clients rejoin by themselves.

A room outgrows its worker as it outgrows a fleet node (``RegistryFleet.assign``): a
participant for whom the room's worker is full by its own report (participants ≥
``fleet.capacity``, or CPU over ``fleet.cpu_limit``) joins the room's overflow *leg* on
another worker, and the join tokens name the room's other workers (``peers``): the
workers link over the fleet's cascade (:mod:`visavis.sfu.cascade`), each trusting the
other by its signed record, which the parent passes on (:mod:`visavis.supervision`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

from visavis.fleet.placement import Limits, best, utilisation
from visavis.fleet.record import NodeRecord
from visavis.fleet.service import LEG, Assignment, Fleet, NoMediaNode, OnMoved, room_of
from visavis.supervision import WorkerLoad

log = logging.getLogger(__name__)

OVERFLOW = f"{LEG}overflow"  # a room's leg key: <room>~overflow (one per room, as per region)


class Worker(Protocol):
    """What placement needs of one worker (:class:`visavis.supervisor.PartProcess`)."""

    @property
    def node_id(self) -> str: ...

    @property
    def control_url(self) -> str | None: ...

    @property
    def running(self) -> bool: ...

    load: WorkerLoad | None
    listeners: list[Callable[[bool], None]]


class WorkerFleet(Fleet):
    """Signaling's :class:`~visavis.fleet.service.Fleet` over this server's SFU workers."""

    def __init__(
        self,
        workers: Sequence[Worker],
        *,
        capacity: int,
        limits: Limits | None = None,
        cascade: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        self.workers = list(workers)
        self.capacity = capacity
        self.limits = limits or Limits()
        self.cascade = cascade
        self.rng = rng or random.Random()
        self.placed: dict[str, int] = {}  # placement (a room or its leg) -> worker index
        self._bound: dict[str, dict[str, str]] = {}  # room -> device -> placement
        self._stranded: dict[int, set[str]] = {}  # placements of a dead worker, no other live
        self._on_moved: OnMoved | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, on_moved: OnMoved) -> None:
        self._on_moved = on_moved
        for index, worker in enumerate(self.workers):
            worker.listeners.append(functools.partial(self._changed, index))

    async def idle(self) -> None:
        """Return once the moves under way are done."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def assign(self, room_id: str) -> Assignment:
        """The room's worker, or its overflow leg's when the room's worker is full by
        its own last report (the fleet's rule, ``RegistryFleet.assign``)."""
        home = await self._home(room_id)
        index = self.placed[room_id]
        load = self.workers[index].load
        full = load is not None and (
            load.participants >= self.capacity or load.cpu >= self.limits.cpu_limit
        )
        if not self.cascade or not full:
            return home
        key = room_id + OVERFLOW
        leg = self.placed.get(key)
        if leg is None or not self.workers[leg].running:
            leg = self._choose(exclude=index, full_ok=False)  # none with room: stay home
            if leg is None:
                return home
            self.placed[key] = leg
            log.info("room %s overflows from SFU worker %d to %d", room_id, index, leg)
        return self._assignment(key, leg)

    async def _home(self, room_id: str) -> Assignment:
        index = self.placed.get(room_id)
        if index is not None:
            if self.workers[index].running:
                return self._assignment(room_id, index)
            moved = await self._move(room_id, index)  # died since: move it now
            if moved is not None:
                return moved
            raise NoMediaNode("the room's media server is restarting: try again in a moment")
        target = self._choose()
        if target is None:
            raise NoMediaNode("no media server is running (the SFU is restarting)")
        self.placed[room_id] = target
        log.debug("room %s placed on SFU worker %d", room_id, target)
        return self._assignment(room_id, target)

    async def release(self, room_id: str) -> None:
        self._bound.pop(room_id, None)
        for key in [k for k in self.placed if room_of(k) == room_id]:
            index = self.placed.pop(key)
            self._stranded.get(index, set()).discard(key)

    async def bind(self, room_id: str, device_id: str, placement: str) -> None:
        self._bound.setdefault(room_id, {})[device_id] = placement

    async def bound(self, room_id: str) -> dict[str, str]:
        return dict(self._bound.get(room_id, {}))

    def rooms_on(self, index: int) -> list[str]:
        """The placements (rooms, and legs of rooms) on worker ``index``."""
        return [key for key, i in self.placed.items() if i == index]

    # -- placement -------------------------------------------------------------------
    def _record(self, index: int) -> NodeRecord:
        worker, load = self.workers[index], self.workers[index].load or WorkerLoad()
        return NodeRecord(
            node_id=str(index),
            kind="sfu",
            boot="",
            ts=0.0,
            control_url=worker.control_url or "",
            capacity=self.capacity,
            cpu=load.cpu,
            pps=load.pps,
            rooms=load.rooms,
            participants=load.participants,
        )

    def _choose(self, exclude: int | None = None, *, full_ok: bool = True) -> int | None:
        """The least utilised running worker (the fleet's rule); when every one is full
        by it, still the least utilised (``full_ok``: one server has nowhere else to
        send a room), or None (a leg: the room's own worker keeps the participant)."""
        live = [i for i, w in enumerate(self.workers) if w.running and i != exclude]
        if not live:
            return None
        records = [self._record(i) for i in live]
        counts = {str(i): len(self.rooms_on(i)) for i in live}
        chosen = best(records, counts, limits=self.limits, rng=self.rng)
        if chosen is None and full_ok:
            chosen = min(records, key=lambda r: utilisation(r, counts[r.node_id], self.limits))
        return None if chosen is None else int(chosen.node_id)

    def _assignment(self, key: str, index: int) -> Assignment:
        """Where placement ``key`` sends a device, naming the room's other workers."""
        worker, room_id = self.workers[index], room_of(key)
        others = {self.workers[i].node_id for k, i in self.placed.items() if room_of(k) == room_id}
        assignment = Assignment(room_id, worker.node_id, worker.control_url or "")
        return replace(
            assignment,
            peers=tuple(sorted(others - {worker.node_id})),
            key=None if key == room_id else key,
        )

    # -- failover --------------------------------------------------------------------
    def _changed(self, index: int, up: bool) -> None:
        """The supervisor's word: worker ``index`` died (its rooms move now) or runs
        again (rooms that had nowhere else to go come back to it)."""
        task = asyncio.create_task(self._failover(index, up), name=f"sfu-worker-{index}-moves")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _failover(self, index: int, up: bool) -> None:
        if not up:
            for room_id in self.rooms_on(index):
                moved = await self._move(room_id, index)
                if moved is None and self.placed.get(room_id) == index:
                    self._stranded.setdefault(index, set()).add(room_id)
            return
        for room_id in sorted(self._stranded.pop(index, set())):
            if self.placed.get(room_id) == index:
                await self._notify(self._assignment(room_id, index))

    async def _move(self, room_id: str, old: int) -> Assignment | None:
        target = self._choose(exclude=old)
        if target is None or self.placed.get(room_id) != old:
            return None
        self.placed[room_id] = target
        log.info("room %s moved from SFU worker %d (dead) to %d", room_id, old, target)
        assignment = self._assignment(room_id, target)
        await self._notify(assignment)
        return assignment

    async def _notify(self, assignment: Assignment) -> None:
        if self._on_moved is None:
            return
        try:
            await self._on_moved(assignment, "failover")
        except Exception:  # one call's trouble must not keep the others' rooms
            log.exception("could not tell the devices of room %s", assignment.room_id)
