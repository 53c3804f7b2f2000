"""Signaling's side of the fleet: place rooms, keep placements, move rooms off dead nodes.

:class:`LocalFleet` is the embedded case (in-process bus): the one SFU of this process,
or ``sfu.public_url``, is the whole fleet. :class:`RegistryFleet` works on the Redis
registry. One signaling node at a time holds the monitor lease; every ``check_interval``
it reads the whole registry and, for each node whose record is gone (dead: no heartbeat
for ``ttl``) or that is draining, moves each of its rooms to another node by
compare-and-set, so each room moves once and its participants hear of it (``on_moved``).
If the holder dies, another signaling node takes the lease within ``MONITOR_LEASE``
seconds. Placement reads a random sample of at most ``view_size`` nodes (all of a small
fleet) every ``view_refresh`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from visavis.clock import Clock, SystemClock
from visavis.fleet.metrics import FleetMetrics
from visavis.fleet.placement import Limits, Rules, best, healthy_relays
from visavis.fleet.record import NodeKind, NodeRecord, RecordChecker
from visavis.fleet.settings import FleetSettings

if TYPE_CHECKING:  # the registry (and redis) load only in deployments that use them
    from visavis.fleet.registry import RedisRegistry, View

log = logging.getLogger(__name__)

MoveReason = Literal["failover", "drain"]
MONITOR_LEASE = 2.0  # seconds before another signaling node takes over the monitor
REPORT_WINDOW = 10.0  # seconds participants' reports of a lost node count together
LEG = "~"  # placement key of a cascaded room's leg: <room>~<region>


def room_of(placement: str) -> str:
    """The room a placement key (a room, or one of its legs) belongs to."""
    return placement.split(LEG, 1)[0]


def leg_region(placement: str) -> str | None:
    """The region a leg serves (None for a room's first node)."""
    _, sep, region = placement.partition(LEG)
    return region if sep else None


class NoMediaNode(RuntimeError):
    """No SFU node can take a new room (none registered, or all full or draining)."""


@dataclass(frozen=True)
class Assignment:
    """Where a room is: the node (None when unknown, e.g. a fixed ``sfu.public_url``),
    and the room's other nodes when it is cascaded (the join token names them).
    ``key`` is the placement the device is sent to: the room itself, or one of its legs
    (``<room>~<region>``); None means the room."""

    room_id: str
    node_id: str | None
    url: str
    peers: tuple[str, ...] = ()
    key: str | None = None

    @property
    def placement(self) -> str:
        return self.key or self.room_id


OnMoved = Callable[[Assignment, MoveReason], Awaitable[None]]


class Fleet(ABC):
    """What signaling needs from the media plane."""

    async def start(self, on_moved: OnMoved) -> None:  # noqa: B027 - optional hook
        """Begin watching for dead or draining nodes; ``on_moved`` hears of each move."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop watching."""

    @abstractmethod
    async def assign(self, room_id: str) -> Assignment:
        """The node the room is on, placing it now if it is new (sticky afterwards).

        :raises NoMediaNode: no node can take it."""

    async def release(self, room_id: str) -> None:  # noqa: B027 - optional hook
        """The room's call ended: forget its placement."""

    def ice_urls(self) -> list[str] | None:
        """ICE URLs of healthy relay nodes, or None to keep the configured ones."""
        return None

    async def report_lost(  # noqa: B027 - optional hook
        self, room_id: str, url: str, reporter: str, *, joined: Collection[str]
    ) -> None:
        """A participant of ``room_id`` (whose joined devices are ``joined``) lost the
        node at ``url`` (see RegistryFleet)."""

    async def bind(self, room_id: str, device_id: str, placement: str) -> None:  # noqa: B027
        """``device_id`` was sent to ``placement`` (the room or one of its legs)."""

    async def bound(self, room_id: str) -> dict[str, str]:
        """Which placement of the room each device was last sent to (by ``bind``)."""
        return {}


class LocalFleet(Fleet):
    """One SFU: the one in this process (``url`` and ``node_id`` read when asked)."""

    def __init__(
        self, url: Callable[[], str | None], node_id: Callable[[], str | None] = lambda: None
    ) -> None:
        self._url = url
        self._node_id = node_id

    async def assign(self, room_id: str) -> Assignment:
        url = self._url()
        if not url:
            raise NoMediaNode("group calls need an SFU: run one or set sfu.public_url")
        return Assignment(room_id, self._node_id(), url)


class RegistryFleet(Fleet):
    """The fleet registered in Redis."""

    def __init__(
        self,
        registry: RedisRegistry,
        settings: FleetSettings,
        *,
        metrics: FleetMetrics,
        owner: str = "signaling",
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.registry = registry
        self.owner = owner
        self.settings = settings
        self.metrics = metrics
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.limits = Limits(cpu_limit=settings.cpu_limit)
        self.checker = RecordChecker(registry.secret, max_skew=settings.max_clock_skew)
        self._views: dict[NodeKind, View] = {}
        self._counted: dict[tuple[str, str], None] = {}
        self._on_moved: OnMoved | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._relays: list[str] | None = None

    # -- Fleet ---------------------------------------------------------------------
    async def start(self, on_moved: OnMoved) -> None:
        self._on_moved = on_moved
        await self.refresh()
        self._monitor = asyncio.create_task(self._watch(), name="fleet-monitor")

    async def close(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None

    async def assign(self, room_id: str) -> Assignment:
        """The room's node for a participant coming through this signaling node: the
        room's first node, or (cascading) a leg in this node's region when the first
        node is in another region, or when it is full."""
        home = await self._home(room_id)
        if not self.settings.cascade or home.node_id is None:
            return home
        view = await self._view("sfu")
        first = view.node(home.node_id)
        legs = await self.registry.legs(room_id)
        region = self.settings.region
        # Full by what it reported (people really there, or its CPU), not by the
        # estimate for rooms placed since its last heartbeat (this one, maybe).
        full = first is not None and (
            first.participants >= first.capacity or first.cpu >= self.limits.cpu_limit
        )
        if first is None or (first.region == region and not full):
            return replace(home, peers=tuple(sorted(set(legs.values()) - {home.node_id})))
        leg = await self._leg(
            room_id,
            f"{room_id}{LEG}{region}",
            legs.get(f"{room_id}{LEG}{region}"),
            view,
            home.node_id,
            same_region=not full,
        )
        if leg is None:
            return replace(home, peers=tuple(sorted(set(legs.values()) - {home.node_id})))
        nodes = {home.node_id, *legs.values(), leg.node_id} - {leg.node_id}
        return Assignment(
            room_id,
            leg.node_id,
            leg.control_url,
            tuple(sorted(n for n in nodes if n)),
            key=f"{room_id}{LEG}{region}",
        )

    async def _leg(
        self,
        room_id: str,
        key: str,
        current: str | None,
        view: View,
        first: str,
        *,
        same_region: bool,
    ) -> NodeRecord | None:
        """The node of the room's leg ``key``, placing it now if it has none (None: no
        node can take it, and the participant joins the room's first node)."""
        if current is not None:
            node = view.node(current) or (await self.refresh()).node(current)
            if node is not None:
                return node
            await self.registry.release(key)  # its node died: place the leg anew
        target = await self._target(view, exclude=(first,))
        if target is None or (same_region and target.region != self.settings.region):
            return None
        winner = await self.registry.place(key, target.node_id)
        await self.registry.add_leg(room_id, key)
        self.metrics.placements.labels("leg").inc()
        return view.node(winner) or (await self.refresh()).node(winner)

    async def _home(self, room_id: str) -> Assignment:
        started = time.perf_counter()
        node_id = await self.registry.room_node(room_id)
        view = await self._view("sfu")
        if node_id is not None:
            node = view.node(node_id) or (await self.refresh()).node(node_id)
            if node is not None:
                return Assignment(room_id, node.node_id, node.control_url)
            # Placed on a node that is gone: move it now rather than wait for the monitor.
            moved = await self._move(room_id, node_id, "failover", notify=True)
            if moved is not None:
                return moved
            raise NoMediaNode("the room's media server is gone and no other can take it")
        target = await self._target(view)
        if target is None:
            self.metrics.placements.labels("no_node").inc()
            raise NoMediaNode("no media server can take a new room (none, or all full)")
        winner = await self.registry.place(room_id, target.node_id)
        view.placed[winner] = view.placed.get(winner, 0) + (winner == target.node_id)
        node = view.node(winner) or (await self.refresh()).node(winner)
        self.metrics.placements.labels("placed").inc()
        self.metrics.placement_seconds.observe(time.perf_counter() - started)
        if node is None:  # placed by another signaling node on a node gone since
            return await self.assign(room_id)
        return Assignment(room_id, node.node_id, node.control_url)

    async def release(self, room_id: str) -> None:
        view = self._views.get("sfu")
        await self.registry.unbind(room_id)
        for key in [room_id, *await self.registry.drop_legs(room_id)]:
            node_id = await self.registry.release(key)
            if node_id is not None and view is not None and view.placed.get(node_id):
                view.placed[node_id] -= 1

    def ice_urls(self) -> list[str] | None:
        return self._relays

    async def bind(self, room_id: str, device_id: str, placement: str) -> None:
        await self.registry.bind(room_id, device_id, placement)

    async def bound(self, room_id: str) -> dict[str, str]:
        return await self.registry.bound(room_id)

    async def report_lost(
        self, room_id: str, url: str, reporter: str, *, joined: Collection[str]
    ) -> None:
        """Count a participant's report that the room's node at ``url`` is lost; once
        enough of the devices sent to that placement (the room, or one of its legs)
        reported it within ``REPORT_WINDOW`` seconds, move that placement now, as if the
        node's record had expired. Enough: half of them, and at least two (all of them
        when fewer are there), so one device alone cannot move a room off a healthy
        node. Reports for a node that is not the room's, or from a device that was not
        sent to it, are refused (counted)."""
        view = await self._view("sfu")
        placements = {room_id: await self.registry.room_node(room_id)}
        placements.update(await self.registry.legs(room_id))
        node = next((n for n in view.nodes if n.control_url == url), None)
        key = next((k for k, n in placements.items() if node and n == node.node_id), None)
        bound = await self.registry.bound(room_id)
        # Devices with no binding (sent before it existed) may be on any placement.
        there = {d for d in joined if bound.get(d, key) == key}
        if node is None or key is None or reporter not in there:
            self.metrics.reports.labels("refused").inc()
            return
        quorum = min(len(there), max(2, (len(there) + 1) // 2))
        count = await self.registry.report(key, node.node_id, reporter, ttl=REPORT_WINDOW)
        if count < quorum:
            self.metrics.reports.labels("counted").inc()
            return
        # Its record lives on for up to ``ttl``: without the mark, this move, a drain or
        # a new room could pick the dead node (the least loaded now) in the meantime.
        await self.registry.mark_lost("sfu", node.node_id, ttl=self.settings.ttl)
        moved = await self._move(key, node.node_id, "failover", notify=True)
        self.metrics.reports.labels("acted" if moved else "counted").inc()

    async def _target(
        self, view: View, exclude: tuple[str, ...] = (), region: str | None = None
    ) -> NodeRecord | None:
        """Sample a few nodes from the view, re-read their placed counts (placements by
        other signaling nodes since the view was read), take the least loaded."""
        rules = Rules(region or self.settings.region, exclude, self.limits)
        candidates = view.pool.candidates(view.placed, rules, self.rng)
        if not candidates:
            return None
        now = await self.registry.placed("sfu", [n.node_id for n in candidates])
        alive = [n for n in candidates if now[n.node_id] is not None]
        view.placed.update({n: c for n, c in now.items() if c is not None})
        return best(alive, view.placed, limits=self.limits, rng=self.rng)

    # -- registry views ------------------------------------------------------------
    async def _view(self, kind: NodeKind) -> View:
        view = self._views.get(kind)
        if view is None or self.clock.now() - view.read_at >= self.settings.view_refresh:
            view = await self.refresh(kind, limit=self.settings.view_size)
        return view

    async def refresh(self, kind: NodeKind = "sfu", *, limit: int | None = None) -> View:
        """Read the registry now, all of it or a sample of ``limit`` nodes (and count
        records refused for the first time)."""
        view = await self.registry.read(kind, self.checker, now=self.clock.now(), limit=limit)
        for node_id, reason in view.refused:
            raw = await self.registry.raw_record(kind, node_id) or ""
            key = (node_id, hashlib.sha256(raw.encode()).hexdigest())
            if key not in self._counted:
                self._counted[key] = None
                while len(self._counted) > 10_000:
                    self._counted.pop(next(iter(self._counted)))
                self.metrics.refused.labels(reason).inc()
                log.warning("fleet: refused the %s record of %s: %s", kind, node_id, reason)
        self._views[kind] = view
        live = sum(1 for n in view.nodes if not n.draining)
        self.metrics.nodes.labels(kind, "live").set(live)
        self.metrics.nodes.labels(kind, "draining").set(len(view.nodes) - live)
        return view

    # -- failover and draining -----------------------------------------------------
    async def _watch(self) -> None:
        while True:
            await self.clock.sleep_until(self.clock.now() + self.settings.check_interval)
            try:
                await self.check()
            except Exception:
                log.exception("fleet check failed; retrying")

    async def check(self) -> int:
        """Move every room off dead and draining nodes (if this node holds the monitor
        lease); return how many this node moved."""
        relays = await self.refresh("relay", limit=self.settings.view_size)
        near = healthy_relays(relays.nodes, region=self.settings.region, limits=self.limits)
        self._relays = [u for n in near for u in n.urls] or None
        if not await self.registry.hold_lease("monitor", self.owner, ttl=MONITOR_LEASE):
            return 0
        view = await self.refresh("sfu")
        moved = 0
        leaving: list[tuple[str, MoveReason]] = [(i, "failover") for i in view.gone]
        leaving += [(n.node_id, "drain") for n in view.nodes if n.draining]
        for node_id, reason in leaving:
            for room_id in await self.registry.rooms_on(node_id):
                if await self._move(room_id, node_id, reason, notify=True) is not None:
                    moved += 1
        if view.gone:
            await self.registry.forget("sfu", view.gone)
        return moved

    async def _move(
        self, room_id: str, old: str, reason: MoveReason, *, notify: bool
    ) -> Assignment | None:
        view = self._views.get("sfu") or await self.refresh()
        target = await self._target(view, exclude=(old,), region=leg_region(room_id))
        if target is None:
            log.warning("fleet: no node can take room %s from %s", room_id, old)
            return None
        if not await self.registry.move(room_id, old, target.node_id):
            return None  # another signaling node moved it (or the call ended)
        view.placed[target.node_id] = view.placed.get(target.node_id, 0) + 1
        self.metrics.moves.labels(reason).inc()
        assignment = Assignment(
            room_of(room_id), target.node_id, target.control_url, key=room_id
        )
        # Name the room's other nodes: the devices that move link them to the new node
        # (the others stay where they are: a leg's or the first node's move is its own).
        legs = await self.registry.legs(room_of(room_id))
        first = await self.registry.room_node(room_of(room_id))
        others = {first, *legs.values()} - {target.node_id, None}
        assignment = replace(assignment, peers=tuple(sorted(n for n in others if n)))
        log.info("fleet: room %s moved from %s to %s (%s)", room_id, old, target.node_id, reason)
        if notify and self._on_moved is not None:
            await self._on_moved(assignment, reason)
        return assignment
