"""Does a second SFU worker add a core's worth of forwarding? One room on one worker, then
one room on each of two workers at once.

    .venv/bin/python benchmarks/sfu_workers.py --participants 8 --runs 3 --profile realistic

A worker is a whole SFU in a process of its own (docs/processes.md, "SFU workers"), so
"two workers" is two ``python -m visavis.sfu`` processes, each fed one room by
``benchmarks/sfu_load.py``'s synthetic participants and C traffic generator, measured
side by side; "one worker" is one of them alone. Prints, per run and as medians, each
room's forwarded packets/s, the worker's CPU (share of a core, µs per forwarded packet)
and latency p50/p99, the total forwarded packets/s and the load average before and
after. The generators run on the same machine: on 2 cores, two rooms' generators and two
workers compete for them, so read the two-worker total as a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sfu_load import add_profile_options, blaster, run

KEYS = (
    "sfu_forwarded_pps",
    "server_cpu_core_share",
    "sfu_cpu_us_per_forwarded_packet",
    "latency_ms_p50",
    "latency_ms_p99",
)


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def brief(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result.get(k) for k in KEYS}


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    before = loadavg()
    one = await run(args)
    both = await asyncio.gather(run(args), run(args))
    return {
        "loadavg_before": before,
        "one_worker": brief(one),
        "two_workers": [brief(r) for r in both],
        "two_workers_total_pps": sum(r["sfu_forwarded_pps"] for r in both),
        "loadavg_after": loadavg(),
    }


def median(runs: list[dict[str, Any]], pick: Any) -> float:
    return round(statistics.median(pick(r) for r in runs), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--sample", type=int, default=20, help="decrypt 1 in N for latency")
    parser.add_argument("--runs", type=int, default=3)
    add_profile_options(parser)
    args = parser.parse_args()
    blaster()  # compiled once, before two rooms start at once
    runs = []
    for i in range(args.runs):
        result = asyncio.run(measure(args))
        print(json.dumps({"run": i + 1, **result}), flush=True)
        runs.append(result)
    one = median(runs, lambda r: r["one_worker"]["sfu_forwarded_pps"])
    total = median(runs, lambda r: r["two_workers_total_pps"])
    print(
        json.dumps(
            {
                "medians_of_runs": args.runs,
                "participants_per_room": args.participants,
                "profile": args.profile,
                "one_worker_pps": one,
                "one_worker_cpu_share": median(
                    runs, lambda r: r["one_worker"]["server_cpu_core_share"]
                ),
                "two_workers_pps_per_room": median(
                    runs,
                    lambda r: statistics.mean(x["sfu_forwarded_pps"] for x in r["two_workers"]),
                ),
                "two_workers_cpu_share_per_worker": median(
                    runs,
                    lambda r: statistics.mean(x["server_cpu_core_share"] for x in r["two_workers"]),
                ),
                "two_workers_total_pps": total,
                "scaling": round(total / max(one, 1), 2),
                "latency_ms_p99_one": median(runs, lambda r: r["one_worker"]["latency_ms_p99"]),
                "latency_ms_p99_two": median(
                    runs, lambda r: max(x["latency_ms_p99"] for x in r["two_workers"])
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
