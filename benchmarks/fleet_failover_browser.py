"""Failover time of a browser group call when its SFU node is killed: p50/p99 over kills.

    .venv/bin/python benchmarks/fleet_failover_browser.py --kills 5

Real processes, as in tests/fleet/test_fleet_browsers.py: two signaling nodes and two SFU
nodes (`visavis serve --role ...`) on PostgreSQL and Redis (fresh database and key
prefix), three pages of Debian's Chromium (360p fake cameras) in one group call. Each
round SIGKILLs the node the call is on and measures, for every page, the time from the
kill to joining the new node (the page's reports, `call.media_lost`, move the room, and
it follows `call.room_moved`) and to decoding video from both others again there; then
it starts a replacement SFU node so the next round has somewhere to go.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.browser import chromium
from tests.fleet.browsers import (
    Round,
    group_call,
    kill_room_node,
    node_env,
    reports_acted,
)
from tests.fleet.cluster import fleet
from tests.served import SLOW_CLIENTS, serve
from tests.services import fresh_postgres, fresh_redis_prefix


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(kills: int) -> None:
    rounds: list[Round] = []
    async with fresh_postgres() as db, fresh_redis_prefix() as prefix:
        tmp = Path(tempfile.mkdtemp(prefix="fleet-failover-browser-"))
        with fleet(tmp, db, prefix, signaling=2, sfu=2, node_env=node_env(2)) as f, \
                contextlib.ExitStack() as extra:
            async with chromium() as browser, group_call(f, browser) as devices:
                for n in range(kills):
                    result = await kill_room_node(f, devices, moves=n + 1)
                    rounds.append(result)
                    print(
                        f"round {n + 1}: on the new node after "
                        f"{', '.join(f'{t:.2f}' for t in result.moved)} s; decoding both "
                        f"others after {', '.join(f'{t:.2f}' for t in result.decoding)} s",
                        flush=True,
                    )
                    del f.sfu[result.node]
                    name = f"sfu-spare{n + 1}"
                    f.sfu[name] = extra.enter_context(
                        serve(tmp / name, "--role", "sfu",
                              env={**f.env, "VISAVIS_NODE_ID": name, **SLOW_CLIENTS}, timeout=120)
                    )
                acted = await reports_acted(f)
    moved = [t for r in rounds for t in r.moved]
    recovery = [r.recovery for r in rounds]
    print(
        f"{kills} kills, 3 Chromium pages: SIGKILL → every page on the new node: "
        f"p50 {percentile([max(r.moved) for r in rounds], 0.5):.2f} s "
        f"(per page p50 {percentile(moved, 0.5):.2f} s); SIGKILL → every page decoding both "
        f"others again: p50 {percentile(recovery, 0.5):.2f} s, "
        f"p99 {percentile(recovery, 0.99):.2f} s, max {max(recovery):.2f} s, "
        f"mean {statistics.fmean(recovery):.2f} s; moved by the pages' reports: "
        f"{acted:.0f} of {kills}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(run(args.kills))


if __name__ == "__main__":
    main()
