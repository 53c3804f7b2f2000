"""The real placement code against a simulated fleet: thousands of SFU nodes, a million
group calls arriving and ending, a tenth of the nodes failing at once.

    .venv/bin/python benchmarks/fleet_sim.py --nodes 3000 --calls 1000000

Event-driven, simulated time (no sleeping): group calls arrive as a Poisson process at the
rate that keeps ``--load`` of the fleet's participant capacity busy on average, last 5 to
10 minutes (uniform), and have 3 to 8 participants (3: 40%, 4: 25%, 5: 15%, 6: 10%,
7-8: 10%). Each arrival is placed by exactly what signaling runs
(:class:`visavis.fleet.placement.Pool` ``candidates`` then ``best``, the same limits and 4
choices), on a view like signaling's: records whose reported participants are refreshed
every ``--report`` seconds (a heartbeat's staleness) and placed-room counts that are
exact (signaling re-reads the sampled nodes' counters in Redis). Halfway through, a tenth
of the nodes die at once; each of their rooms is moved as the monitor does (the same
choice, excluding dead nodes, on a pool rebuilt from the live view).

Prints: placement time per call (the real code's CPU time on this thread, p50/p99/max),
rooms refused (no node could take them), balance (participants per node over capacity:
mean, p99, max, coefficient of variation) sampled once a simulated minute before and after
the failure, and the failure's rooms moved, time to re-place them all, refused moves and
the worst node right after.
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import statistics
import time
from dataclasses import dataclass, field

from visavis.fleet.placement import Limits, Pool, Rules, best
from visavis.fleet.record import NodeRecord

SIZES = [(3, 0.40), (4, 0.25), (5, 0.15), (6, 0.10), (7, 0.05), (8, 0.05)]


@dataclass
class Sim:
    nodes: int
    capacity: int
    load: float
    report: float
    rng: random.Random
    records: dict[str, NodeRecord] = field(default_factory=dict)
    people: dict[str, int] = field(default_factory=dict)  # true participants per node
    placed: dict[str, int] = field(default_factory=dict)  # rooms per node (Redis counts)
    rooms: dict[int, tuple[str, int]] = field(default_factory=dict)  # room -> (node, size)
    dead: set[str] = field(default_factory=set)
    pool: Pool | None = None
    place_times: list[float] = field(default_factory=list)
    refused: int = 0
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        for i in range(self.nodes):
            node_id = f"n{i}"
            self.records[node_id] = NodeRecord(
                node_id=node_id, kind="sfu", boot="b", ts=0.0, capacity=self.capacity
            )
            self.people[node_id] = 0
            self.placed[node_id] = 0
        self.refresh_reports()

    def refresh_reports(self) -> None:
        """Every node's heartbeat: its real participant count becomes visible."""
        self.records = {
            n: r.with_load(participants=self.people[n], rooms=self.placed[n])
            for n, r in self.records.items()
        }
        self.pool = Pool([r for n, r in self.records.items() if n not in self.dead])

    def choose(self, exclude: tuple[str, ...] = ()) -> str | None:
        assert self.pool is not None
        started = time.thread_time()
        candidates = self.pool.candidates(
            self.placed, Rules(exclude=exclude, limits=self.limits), self.rng
        )
        target = best(candidates, self.placed, limits=self.limits, rng=self.rng)
        self.place_times.append(time.thread_time() - started)
        return None if target is None else target.node_id

    def arrive(self, room: int, size: int) -> bool:
        node = self.choose()
        if node is None:
            self.refused += 1
            return False
        self.rooms[room] = (node, size)
        self.placed[node] += 1
        self.people[node] += size
        return True

    def end(self, room: int) -> None:
        found = self.rooms.pop(room, None)
        if found is not None:
            node, size = found
            self.placed[node] -= 1
            self.people[node] -= size

    def fail(self, fraction: float) -> dict[str, float]:
        """Kill ``fraction`` of the live nodes at once and move every room they held."""
        live = [n for n in self.records if n not in self.dead]
        victims = set(self.rng.sample(live, int(len(live) * fraction)))
        self.dead |= victims
        self.pool = Pool([r for n, r in self.records.items() if n not in self.dead])
        moving = [room for room, (node, _) in self.rooms.items() if node in victims]
        before = len(self.place_times)
        started = time.thread_time()
        lost = 0
        for room in moving:
            old, size = self.rooms[room]
            target = self.choose(exclude=(old,))
            self.placed[old] -= 1
            self.people[old] -= size
            if target is None:
                lost += 1
                del self.rooms[room]
                continue
            self.rooms[room] = (target, size)
            self.placed[target] += 1
            self.people[target] += size
        elapsed = time.thread_time() - started
        worst = max(self.people[n] / self.capacity for n in self.records if n not in self.dead)
        return {
            "nodes_failed": len(victims),
            "rooms_moved": len(moving) - lost,
            "rooms_lost": lost,
            "replace_seconds": elapsed,
            "per_move_us": 1e6 * elapsed / max(1, len(self.place_times) - before),
            "worst_after": worst,
        }

    def balance(self) -> tuple[float, float, float, float]:
        loads = sorted(self.people[n] / self.capacity for n in self.records if n not in self.dead)
        mean = statistics.fmean(loads)
        cv = statistics.pstdev(loads) / mean if mean else 0.0
        return mean, loads[int(0.99 * (len(loads) - 1))], loads[-1], cv


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    sim = Sim(args.nodes, args.capacity, args.load, args.report, rng)
    mean_size = sum(s * p for s, p in SIZES)
    mean_duration = 450.0
    concurrent_rooms = args.load * args.nodes * args.capacity / mean_size
    rate = concurrent_rooms / mean_duration  # Little's law
    sizes, weights = zip(*SIZES, strict=True)
    print(
        f"load average {os.getloadavg()[0]:.2f}; "
        f"{args.nodes} nodes x {args.capacity} participants, target load {args.load:.0%}: "
        f"{concurrent_rooms:,.0f} concurrent rooms, {rate:,.0f} arrivals/s, "
        f"{args.calls:,} calls"
    )
    events: list[tuple[float, int, int]] = []  # (time, kind 0=end 1=arrive, room)
    t = 0.0
    for room in range(args.calls):
        t += rng.expovariate(rate)
        heapq.heappush(events, (t, 1, room))
    horizon = t
    fail_at = horizon / 2
    failed: dict[str, float] | None = None
    next_report = args.report
    next_sample = 60.0
    samples: dict[str, list[tuple[float, float, float, float]]] = {"before": [], "after": []}
    warmup = mean_duration * 2
    wall = time.perf_counter()
    while events:
        now, kind, room = heapq.heappop(events)
        while now >= next_report:
            sim.refresh_reports()
            next_report += args.report
        if failed is None and now >= fail_at:
            failed = sim.fail(args.fail)
            sim.refresh_reports()
        if now >= next_sample:
            if now > warmup and now < horizon - mean_duration:
                samples["before" if failed is None else "after"].append(sim.balance())
            next_sample += 60.0
        if kind == 1:
            size = rng.choices(sizes, weights)[0]
            if sim.arrive(room, size):
                heapq.heappush(events, (now + rng.uniform(300, 600), 0, room))
        else:
            sim.end(room)
    wall = time.perf_counter() - wall
    times = sim.place_times
    print(
        f"placement: {len(times):,} choices, p50 {1e6 * percentile(times, 0.5):.1f} µs, "
        f"p99 {1e6 * percentile(times, 0.99):.1f} µs, max {1e6 * max(times):.0f} µs; "
        f"refused {sim.refused:,}; simulated {horizon:,.0f} s in {wall:.0f} s; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    for phase, rows in samples.items():
        if rows:
            mean, p99, top, cv = (statistics.fmean(c) for c in zip(*rows, strict=True))
            worst = max(r[2] for r in rows)
            print(
                f"balance {phase} failure ({len(rows)} samples): mean {mean:.1%}, p99 node "
                f"{p99:.1%}, max node {top:.1%} (worst sample {worst:.1%}), CV {cv:.3f}"
            )
    if failed is not None:
        print(
            f"failure of {failed['nodes_failed']:.0f} nodes: {failed['rooms_moved']:,.0f} rooms "
            f"moved in {failed['replace_seconds']:.2f} s of placement CPU "
            f"({failed['per_move_us']:.1f} µs each), {failed['rooms_lost']:.0f} without a node; "
            f"fullest node right after {failed['worst_after']:.1%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3000)
    parser.add_argument("--capacity", type=int, default=200, help="participants per node")
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--load", type=float, default=0.7, help="mean share of capacity used")
    parser.add_argument("--report", type=float, default=5.0, help="seconds between reports")
    parser.add_argument("--fail", type=float, default=0.1, help="share of nodes failing")
    parser.add_argument("--seed", type=int, default=1)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
