"""Saturation of one relay process: the packets/s at which loss or latency breaks.

    .venv/bin/python benchmarks/fleet_relay_capacity.py            # the default steps
    .venv/bin/python benchmarks/fleet_relay_capacity.py --steps 10000,40000 --seconds 4

One ``visavis serve --role relay`` process as deployed in a fleet (on a Redis bus, so it
registers and reports its own load). Per step, a sender process makes ``CLIENTS`` TURN
allocations (long-term credentials, one channel each) and sends 160-byte ChannelData
messages at a fixed total rate for ``--seconds``; the relay relays them to a counting
sink process (a UDP socket: what arrives there is what the relay delivered). Meanwhile
a probe client pings a ``turnutils_peer`` echo through the same relay every 20 ms
(``relay_vs_coturn.probe``: RTT p50/p99). Per step: the rate offered and the rate sent,
packets/s relayed as the relay reports them in its registry record (``pps``, the figure
placement reads, median over the step) and its CPU share (the record's ``cpu``), loss
(sent but not delivered) and probe RTT. A step *holds* while loss stays under 1 % and
the probe's p99 under 50 ms; the run stops at the second step that does not. The
capacity is the relayed rate of the best step that held. Every load is bounded;
every process started here is stopped. Loopback only.

(``turnutils_uclient`` cannot be the load here: on this shared machine it sent 4,800 of
the 20,000 messages/s asked, losing 41 % of them itself, while the relay used 2 % of a
core.) The sender, the sink and the relay share this machine's cores: state the load
average (printed) next to any figure, and treat the result as a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    turn_channel,
    wait_until_serving,
)
from tests.served import serve
from tests.services import REDIS_URL, fresh_redis_prefix

from visavis.config import Settings
from visavis.fleet.admin import FleetAdmin

SECRET = "relay-capacity-secret"
CLIENTS = 20  # allocations the load uses (each its own relay port and channel)
PAYLOAD = 160  # bytes per message (an Opus-sized packet)
LOSS_LIMIT = 0.01
P99_LIMIT_MS = 50.0
DEFAULT_STEPS = "5000,10000,20000,30000,40000,60000,80000,100000"


@dataclass
class Step:
    offered: int  # messages/s asked of the sender
    sent: float  # messages/s it managed
    relayed: float  # packets/s the relay reported relaying
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


def sender(relay_port: int, sink_port: int, rate: int, seconds: float, out: Any) -> None:
    """Process: ``CLIENTS`` allocations, then ``rate`` messages/s for ``seconds``."""
    from visavis.protocol.turn import encode_channel_data

    server = ("127.0.0.1", relay_port)
    socks = []
    for _ in range(CLIENTS):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        asyncio.run(turn_channel(sock, server, sink_port, 0x4000))
        sock.setblocking(True)
        sock.connect(server)
        socks.append(sock)
    message = encode_channel_data(0x4000, b"x" * PAYLOAD)
    out.put(("ready", 0))
    batch = max(1, rate // 1000)  # a batch per millisecond
    sent, started = 0, time.monotonic()
    deadline, due = started + seconds, started
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        if now < due:
            time.sleep(due - now)
        for i in range(batch):  # blocking sockets: a full buffer waits, nothing is dropped
            socks[(sent + i) % CLIENTS].send(message)
        sent += batch
        due += batch / rate
    out.put(("sent", sent, time.monotonic() - started))
    for sock in socks:
        sock.close()


def sink(sock: socket.socket, out: Any) -> None:
    """Process: count datagrams until none came for a second after the first."""
    sock.settimeout(None)
    count = 0
    sock.recv(2048)
    count += 1
    sock.settimeout(1.0)
    try:
        while True:
            sock.recv(2048)
            count += 1
    except TimeoutError:
        pass
    out.put(("received", count))


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


async def queue_get(queue: Any, limit: float) -> Any:
    return await asyncio.wait_for(asyncio.to_thread(queue.get, True, limit), limit + 1)


async def run_step(
    admin: FleetAdmin, node: str, pid: int, relay_port: int, peer_port: int, offered: int,
    seconds: float,
) -> Step:  # fmt: skip
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    sink_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink_sock.bind(("127.0.0.1", 0))
    sink_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    receiving = ctx.Process(target=sink, args=(sink_sock, results), daemon=True)
    receiving.start()
    sending = ctx.Process(
        target=sender,
        args=(relay_port, sink_sock.getsockname()[1], offered, seconds, results),
        daemon=True,
    )
    sending.start()
    try:
        assert (await queue_get(results, 60))[0] == "ready"
        cpu0, wall0 = cpu_seconds(pid), time.monotonic()
        until = wall0 + seconds
        probing = asyncio.create_task(probe(relay_port, peer_port, until))
        records = await sample(admin, node, until)
        got: dict[str, Any] = {}
        while len(got) < 2:
            item = await queue_get(results, seconds + 30)
            got[item[0]] = item[1:]
        cpu_proc = (cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0)
        rtts = sorted(await probing)
    finally:
        for proc in (sending, receiving):
            if proc.is_alive():
                proc.kill()
            proc.join(5)
        sink_sock.close()
    sent, took = got["sent"]
    (received,) = got["received"]
    seen = records[1:] or records  # the first record may straddle the start
    return Step(
        offered=offered,
        sent=sent / took,
        relayed=statistics.median(p for p, _ in seen) if seen else 0.0,
        cpu=statistics.median(c for _, c in seen) if seen else 0.0,
        cpu_proc=cpu_proc,
        loss=max(0.0, 1.0 - received / sent) if sent else 1.0,
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
                print(
                    f"{'offered/s':>10} {'sent/s':>8} {'relayed/s':>10} {'cpu':>5} {'(proc)':>6} "
                    f"{'loss':>7} {'p50 ms':>7} {'p99 ms':>7}  load average"
                )
                for offered in steps:
                    step = await run_step(
                        admin, "relay-1", relay.pid, relay_port, peer_port, offered, args.seconds
                    )
                    results.append(step)
                    print(
                        f"{step.offered:>10} {step.sent:>8.0f} {step.relayed:>10.0f} "
                        f"{step.cpu:>5.2f} {step.cpu_proc:>6.2f} {step.loss:>7.2%} "
                        f"{step.p50:>7.2f} {step.p99:>7.2f}  {loadavg()}"
                        f"{'' if step.holds else '  (breaks)'}",
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
