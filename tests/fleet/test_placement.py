"""Placement rules, on plain records (no Redis)."""

from __future__ import annotations

import random
from collections import Counter

from visavis.fleet.placement import Limits, Rules, choose, eligible, healthy_relays, utilisation
from visavis.fleet.record import NodeRecord


def node(node_id: str, **changes: object) -> NodeRecord:
    base = NodeRecord(node_id=node_id, kind="sfu", boot="b", ts=0.0, capacity=30)
    return base.with_load(**changes)


def test_rooms_spread_over_empty_nodes_by_placed_count() -> None:
    nodes = [node("a"), node("b"), node("c")]
    placed: dict[str, int] = {}
    rng = random.Random(1)
    for _ in range(3):
        chosen = choose(nodes, placed, rng=rng)
        assert chosen is not None
        placed[chosen.node_id] = placed.get(chosen.node_id, 0) + 1
    assert placed == {"a": 1, "b": 1, "c": 1}


def test_load_counts_reported_people_and_cpu() -> None:
    busy = node("a", participants=20)
    hot = node("b", cpu=0.8)
    idle = node("c", participants=3)
    assert choose([busy, hot, idle], {}, rng=random.Random(0)) == idle
    assert utilisation(hot, 0, Limits(cpu_limit=0.85)) > utilisation(busy, 0)


def test_full_draining_and_excluded_nodes_take_no_rooms() -> None:
    full = node("full", participants=30)
    placed_full = node("placed")  # 8 rooms placed x 4 people > capacity
    draining = node("d", draining=True)
    hot = node("hot", cpu=0.9)
    gone = node("gone")
    relay = node("r").with_load(kind="relay")
    nodes = [full, placed_full, draining, hot, gone, relay]
    assert eligible(nodes, {"placed": 8}, exclude=("gone",)) == []
    assert choose(nodes, {"placed": 8}, Rules(exclude=("gone",))) is None
    assert choose(nodes, {"placed": 7}, Rules(exclude=("gone",))) == placed_full
    # Rooms the node already reported are counted by their real people, not estimated.
    reported = node("r", rooms=7, participants=21)
    assert utilisation(reported, 7) == 21 / 30 and utilisation(reported, 8) == 25 / 30


def test_region_preferred_while_it_has_room() -> None:
    eu, us = node("eu", region="eu"), node("us", region="us")
    assert choose([eu, us], {}, Rules(region="us")) == us
    assert choose([eu, us.with_load(participants=30)], {}, Rules(region="us")) == eu


def test_power_of_choices_balances_a_large_fleet() -> None:
    nodes = [node(f"n{i}", capacity=1000) for i in range(500)]
    placed: Counter[str] = Counter()
    rng = random.Random(7)
    for _ in range(20_000):
        chosen = choose(nodes, placed, rng=rng)
        assert chosen is not None
        placed[chosen.node_id] += 1
    counts = [placed[n.node_id] for n in nodes]
    assert max(counts) - min(counts) <= 3  # 40 each on average


def test_healthy_relays_prefer_the_region_then_low_cpu() -> None:
    relays = [
        node("r1", kind="relay", region="eu", cpu=0.5),
        node("r2", kind="relay", region="us", cpu=0.1),
        node("r3", kind="relay", region="eu", cpu=0.2),
        node("r4", kind="relay", region="eu", draining=True),
    ]
    assert [n.node_id for n in healthy_relays(relays, region="eu")] == ["r3", "r1"]


def test_relays_are_chosen_by_load_not_only_region() -> None:
    """A relay's load is its packet rate against its capacity (or its CPU): a full relay
    of the device's region is passed over for a farther one with room, and used only
    when every relay is full; among equals, the fewest allocations first."""
    def relay(node_id: str, region: str, **load: object) -> NodeRecord:
        return node(node_id, kind="relay", region=region, capacity=100_000, **load)

    relays = [
        relay("busy", "us", pps=60_000.0),
        relay("idle", "us", allocations=3),
        relay("idle2", "us", allocations=1),
        relay("full", "us", pps=100_000.0),
        relay("hot", "us", cpu=0.9),  # CPU over the limit: full too
        relay("far", "eu"),
    ]
    assert [n.node_id for n in healthy_relays(relays, region="us")] == ["idle2", "idle"]
    assert [n.node_id for n in healthy_relays(relays, region="us", limit=4)] == [
        "idle2", "idle", "busy", "far"
    ]
    everyone_full = [relay("full", "us", pps=150_000.0), relay("far", "eu", pps=120_000.0)]
    assert [n.node_id for n in healthy_relays(everyone_full, region="us")] == ["full", "far"]
