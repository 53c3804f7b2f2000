"""Where a room goes: pure functions over a view of the registry (no I/O, no clock).

A node's *demand* is the participants it reported plus :data:`ROOM_ESTIMATE` for each
room placed on it beyond the rooms it reported (placements count at once, before the
node's next heartbeat shows the people who joined). Its *utilisation* is the larger of demand over
capacity and CPU over its limit; at 1 or more it is full and takes no new rooms, nor does
a draining node.

:func:`choose` samples ``choices`` eligible nodes at random (all of them when there are
few) and takes the least utilised: the "power of d choices" rule, which keeps a fleet of
thousands balanced in O(d) per placement and stops many signaling nodes working from the
same slightly stale view from all piling onto the one emptiest node. Nodes in the
preferred region are used while any has room; otherwise any region.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from visavis.fleet.record import NodeRecord

ROOM_ESTIMATE = 4  # people a new group room will hold (the mean of the seed's groups)
DEFAULT_CHOICES = 4


@dataclass(frozen=True)
class Limits:
    """When a node counts as full (signaling's view; nodes announce their capacity)."""

    cpu_limit: float = 0.85


@dataclass(frozen=True)
class Rules:
    """How one placement chooses: the preferred region (None: any), nodes it must not use
    (the node a room leaves), when a node is full, how many nodes it samples."""

    region: str | None = None
    exclude: Collection[str] = ()
    limits: Limits = Limits()
    choices: int = DEFAULT_CHOICES


def demand(node: NodeRecord, placed: int) -> int:
    """Participants the node carries or is about to: those it reported, plus an estimate
    for each room placed on it beyond the rooms it reported (placed since its last
    heartbeat, or placed and not joined yet)."""
    return node.participants + max(0, placed - node.rooms) * ROOM_ESTIMATE


def utilisation(node: NodeRecord, placed: int, limits: Limits = Limits()) -> float:
    """0 = idle, 1 = full (by participants against capacity, or CPU against its limit).

    CPU counts in tenths of the limit: a one-second CPU sample is noise at low load, and
    rooms should spread by count until CPU says something real."""
    cpu = math.floor(node.cpu / limits.cpu_limit * 10) / 10
    return max(demand(node, placed) / node.capacity, cpu)


def eligible(
    nodes: Sequence[NodeRecord],
    placed: Mapping[str, int],
    *,
    exclude: Collection[str] = (),
    limits: Limits = Limits(),
) -> list[NodeRecord]:
    """SFU nodes that may take a new room: not draining, not full, not excluded."""
    return [
        n
        for n in nodes
        if n.kind == "sfu"
        and not n.draining
        and n.node_id not in exclude
        and utilisation(n, placed.get(n.node_id, 0), limits) < 1.0
    ]


class Pool:
    """The SFU nodes of one registry view, grouped by region, to choose from many times.

    Choosing costs O(``choices``) however large the fleet: a few random samples, and a
    full scan only when every sample was full (a fleet nearly out of room)."""

    def __init__(self, nodes: Sequence[NodeRecord]) -> None:
        self.nodes = [n for n in nodes if n.kind == "sfu"]
        self.by_region: dict[str, list[NodeRecord]] = {}
        for n in self.nodes:
            self.by_region.setdefault(n.region, []).append(n)

    def candidates(
        self,
        placed: Mapping[str, int],
        rules: Rules = Rules(),
        rng: random.Random | None = None,
    ) -> list[NodeRecord]:
        """Up to ``rules.choices`` nodes that may take a room by the counts known (the
        preferred region's if any has room, else any region's). Signaling re-reads these
        few nodes' placed counts before :func:`best` picks, so its choice is never staler
        than that read."""
        pick = rng or random.Random()
        groups = [self.by_region.get(rules.region, [])] if rules.region is not None else []
        for group in [*groups, self.nodes]:
            found = _sample(group, placed, rules, pick)
            if found:
                return found
        return []

    def choose(
        self,
        placed: Mapping[str, int],
        rules: Rules = Rules(),
        rng: random.Random | None = None,
    ) -> NodeRecord | None:
        """The node for a new room, or None when no node can take one."""
        pick = rng or random.Random()
        return best(self.candidates(placed, rules, pick), placed, limits=rules.limits, rng=pick)


def _sample(
    group: Sequence[NodeRecord], placed: Mapping[str, int], rules: Rules, rng: random.Random
) -> list[NodeRecord]:
    choices = rules.choices

    def ok(n: NodeRecord) -> bool:
        return (
            not n.draining
            and n.node_id not in rules.exclude
            and utilisation(n, placed.get(n.node_id, 0), rules.limits) < 1.0
        )

    if len(group) <= choices:
        return [n for n in group if ok(n)]
    for _ in range(3):
        sample = [n for n in rng.sample(group, choices) if ok(n)]
        if sample:
            return sample
    room = [n for n in group if ok(n)]  # nearly every node is full: look at all of them
    return room if len(room) <= choices else rng.sample(room, choices)


def best(
    candidates: Sequence[NodeRecord],
    placed: Mapping[str, int],
    *,
    limits: Limits = Limits(),
    rng: random.Random | None = None,
) -> NodeRecord | None:
    """The least utilised candidate that is not full (ties broken at random)."""
    loads = {n.node_id: utilisation(n, placed.get(n.node_id, 0), limits) for n in candidates}
    room = [n for n in candidates if loads[n.node_id] < 1.0]
    if not room:
        return None
    low = min(loads[n.node_id] for n in room)
    return (rng or random.Random()).choice([n for n in room if loads[n.node_id] == low])


def choose(
    nodes: Sequence[NodeRecord],
    placed: Mapping[str, int],
    rules: Rules = Rules(),
    rng: random.Random | None = None,
) -> NodeRecord | None:
    """The node for a new room among ``nodes`` (see :class:`Pool` to choose repeatedly)."""
    return Pool(nodes).choose(placed, rules, rng)


def relay_load(node: NodeRecord, limits: Limits = Limits()) -> float:
    """0 = idle, 1 = full: a relay's packet rate against its capacity (packets/s), or its
    CPU against the limit (in tenths, as for SFU nodes)."""
    cpu = math.floor(node.cpu / limits.cpu_limit * 10) / 10
    return max(node.pps / node.capacity, cpu)


def healthy_relays(
    nodes: Sequence[NodeRecord],
    *,
    region: str | None = None,
    limit: int = 2,
    limits: Limits = Limits(),
) -> list[NodeRecord]:
    """Relay nodes to hand to a device: those not full first (a full one only when all
    are: better than none), its region's first, then the least loaded, then the fewest
    allocations (a relay's load shows only once its allocations carry media)."""
    relays = [n for n in nodes if n.kind == "relay" and not n.draining]
    loads = {n.node_id: relay_load(n, limits) for n in relays}
    relays.sort(
        key=lambda n: (
            loads[n.node_id] >= 1.0,
            n.region != region,
            loads[n.node_id],
            n.allocations,
            n.node_id,
        )
    )
    return relays[:limit]
