"""Saturation of one relay process: the packets/s at which loss or latency breaks.

    .venv/bin/python benchmarks/fleet_relay_capacity.py            # the default steps
    .venv/bin/python benchmarks/fleet_relay_capacity.py --steps 10000,40000 --seconds 4

One ``visavis serve --role relay`` process (as deployed in a fleet: on a Redis bus, so it
registers and reports its own load), one ``turnutils_peer`` echo peer, and for each step
a ``turnutils_uclient`` run (channels, 160-byte messages) offering a fixed rate towards
the peer; the peer echoes every message, so the relay relays twice the offered rate when
it keeps up. Meanwhile a probe client pings through the same relay every 20 ms (RTT
p50/p99, as ``relay_vs_coturn.py``). Per step: packets relayed per second as the relay
itself reports them in its registry record (``pps``, the figure placement reads, median
over the steady part of the step), its CPU share (the record's ``cpu``), loss (uclient's
count), probe RTT. A step *holds* while loss stays under 1 % and the probe's p99 under
50 ms; the steps stop at the second step that does not hold. The capacity is the relayed
rate of the last step that held. Every load is bounded (``--seconds`` per step); every
process started here is stopped by PID. Loopback only.

The load generator, the echo peer and the relay share this machine's cores: state the
load average (printed) next to any figure, and treat the result as a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from relay_vs_coturn import (
    PASSWORD,
    REALM,
    USER,
    cpu_seconds,
    free_port,
    probe,
    start_peer,
    wait_until_serving,
)
from tests.served import serve
from tests.services import REDIS_URL, fresh_redis_prefix

from visavis.config import Settings
from visavis.fleet.admin import FleetAdmin

SECRET = "relay-capacity-secret"
CLIENTS = 100  # allocations the load uses (each its own relay port and channel)
LOSS_LIMIT = 0.01
P99_LIMIT_MS = 50.0
DEFAULT_STEPS = "5000,10000,20000,30000,40000,50000,60000,80000,100000"


@dataclass
class Step:
    offered: int  # messages/s the clients send towards the peer
    relayed: float  # packets/s the relay reported relaying (both directions)
    cpu: float  # share of one core (the relay's own figure)
    cpu_proc: float  # the same from /proc over the whole step
    loss: float
    p50: float
    p99: float

    @property
    def holds(self) -> bool:
        return self.loss < LOSS_LIMIT and self.p99 < P99_LIMIT_MS


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def sample(admin: FleetAdmin, node: str, until: float) -> list[tuple[float, float]]:
    """(pps, cpu) from the relay's registry record at every heartbeat until ``until``."""
    seen: list[tuple[float, float]] = []
    last = 0.0
    while time.monotonic() < until:
        view = await admin.view("relay")
        record = view.node(node)
        if record is not None and record.ts != last:
            last = record.ts
            seen.append((record.pps, record.cpu))
        await asyncio.sleep(0.25)  # half the heartbeat interval: every record is seen
    return seen


async def run_step(
    admin: FleetAdmin, node: str, pid: int, relay_port: int, peer_port: int, offered: int,
    seconds: float,
) -> Step:  # fmt: skip
    interval = max(1, round(CLIENTS * 1000 / offered))  # ms between one client's messages
    clients = max(1, round(offered * interval / 1000))
    messages = max(1, round(seconds * 1000 / interval))
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
    uclient = await asyncio.create_subprocess_exec(
        "turnutils_uclient", "-u", USER, "-w", PASSWORD, "-e", "127.0.0.1",
        "-r", str(peer_port), "-p", str(relay_port), "-m", str(clients), "-n", str(messages),
        "-l", "160", "-z", str(interval), "-c", "-X", "127.0.0.1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    # The steady part: after the allocations are made (a second or two), until the end.
    steady = time.monotonic() + 2.0
    probing = asyncio.create_task(probe(relay_port, peer_port, steady + seconds - 1.0))
    records = asyncio.create_task(sample(admin, node, steady + seconds - 1.0))
    try:
        out_bytes, _ = await asyncio.wait_for(uclient.communicate(), seconds * 4 + 60)
    except TimeoutError:
        uclient.kill()
        await uclient.wait()
        raise
    cpu_proc = (cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0)
    rtts = sorted(await probing)
    seen = [s for s in await records if s[0] > 0]
    out = out_bytes.decode(errors="replace")
    totals = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$", out, re.M)
    sent, received = (int(x) for x in totals[-1]) if totals else (0, 0)
    return Step(
        offered=clients * 1000 // interval,
        relayed=statistics.median(p for p, _ in seen) if seen else 0.0,
        cpu=statistics.median(c for _, c in seen) if seen else 0.0,
        cpu_proc=cpu_proc,
        loss=1.0 - received / sent if sent else 1.0,
        p50=statistics.median(rtts) if rtts else float("inf"),
        p99=rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))] if rtts else float("inf"),
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", default=DEFAULT_STEPS, help="offered messages/s, ascending")
    parser.add_argument("--seconds", type=float, default=5.0, help="steady seconds per step")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="relay-capacity-"))
    async with fresh_redis_prefix() as prefix:
        env = {
            "VISAVIS_BUS_URL": REDIS_URL,
            "VISAVIS_REDIS_PREFIX": prefix,
            "VISAVIS_SHARED_SECRET": SECRET,
            "VISAVIS_NODE_ID": "relay-1",
            "VISAVIS_RELAY__REALM": REALM,
            "VISAVIS_RELAY__USER": f'["{USER}:{PASSWORD}"]',
            "VISAVIS_RELAY__ALLOWED_PEER_IP": '["127.0.0.1"]',
            "VISAVIS_RELAY__UNAUTH_RATE": "100000",
            "VISAVIS_RELAY__UNAUTH_BURST": "100000",
            "VISAVIS_RELAY__MIN_PORT": "40000",
            "VISAVIS_RELAY__MAX_PORT": "44999",
        }
        settings = Settings(
            data_dir=tmp / "admin", bus_url=REDIS_URL, redis_prefix=prefix, shared_secret=SECRET
        )
        admin = FleetAdmin(settings)
        peer_port = free_port()
        peer = start_peer(peer_port)
        try:
            with serve(tmp / "relay", "--role", "relay", env=env) as relay:
                stun = next(u for u in relay.endpoints["relay"] if u.startswith("stun:"))
                relay_port = int(stun.rsplit(":", 1)[1].split("?")[0])
                await wait_until_serving(relay_port, peer_port, relay.process)
                results: list[Step] = []
                failed = 0
                print(f"{'offered/s':>10} {'relayed/s':>10} {'cpu':>5} {'(proc)':>6} "
                      f"{'loss':>7} {'p50 ms':>7} {'p99 ms':>7}  load average")  # fmt: skip
                for offered in steps:
                    step = await run_step(
                        admin, "relay-1", relay.pid, relay_port, peer_port, offered, args.seconds
                    )
                    results.append(step)
                    print(
                        f"{step.offered:>10} {step.relayed:>10.0f} {step.cpu:>5.2f} "
                        f"{step.cpu_proc:>6.2f} {step.loss:>7.2%} {step.p50:>7.2f} "
                        f"{step.p99:>7.2f}  {loadavg()}{'' if step.holds else '  (breaks)'}",
                        flush=True,
                    )
                    failed = 0 if step.holds else failed + 1
                    if failed == 2:
                        break
        finally:
            peer.kill()  # turnutils_peer ignores SIGTERM
            peer.wait()
            await admin.close()
    held = [s for s in results if s.holds]
    if held:
        best = max(held, key=lambda s: s.relayed)
        print(
            f"capacity: {best.relayed:.0f} packets/s relayed at {best.cpu:.2f} of a core "
            f"(offered {best.offered}/s; loss < {LOSS_LIMIT:.0%}, probe p99 < "
            f"{P99_LIMIT_MS:.0f} ms); {os.cpu_count()} cores, load average {loadavg()}"
        )
    else:
        print("no step held")


if __name__ == "__main__":
    asyncio.run(main())
