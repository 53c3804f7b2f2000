"""Signaling benchmark: connected devices, call setups per second, invite-to-ring latency.

Starts ``visavis serve --role signaling`` in a subprocess (SQLite and the in-process bus,
as a single machine runs it), seeds users and devices directly in its database, connects
N idle device WebSockets, then places calls at a fixed rate and measures, for every
callee device, the time from sending ``call.invite`` to receiving ``call.incoming``.
Every call is cancelled right after its rings arrive, so calls do not pile up.

Budgets (docs/ARCHITECTURE): ring p99 < 20 ms on loopback at 200 setups/s;
10,000 connected devices in one process in < 1 GiB.

    .venv/bin/python benchmarks/signaling_ring.py --devices 10000 --rate 200 --duration 10

All traffic stays on 127.0.0.1; every loop is bounded by --duration and counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import websockets

from visavis.signaling.auth import hash_password, hash_token, new_id, new_token
from visavis.store import open_store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Client:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.rings: dict[str, float] = {}
        self.results: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self.read())

    async def read(self) -> None:
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                kind = msg.get("type")
                if kind == "call.incoming":
                    self.rings[msg["call_id"]] = time.perf_counter()
                elif kind in ("result", "error") and msg.get("re") in self.results:
                    self.results.pop(msg["re"]).set_result(msg)
                if "seq" in msg and msg["seq"] % 50 == 0:
                    await self.ws.send(json.dumps({"type": "ack", "seq": msg["seq"]}))
        except websockets.ConnectionClosed:
            pass


async def connect(url: str, token: str) -> Client:
    ws = await websockets.connect(url, max_size=2**20, ping_interval=None)
    await ws.send(json.dumps({"type": "hello", "token": token}))
    welcome = json.loads(await ws.recv())
    assert welcome["type"] == "welcome", welcome
    return Client(ws)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="visavis-bench-"))
    db_url = f"sqlite+aiosqlite:///{data / 'visavis.sqlite3'}"
    callee_devices = args.callee_devices
    pairs = max(1, int(args.rate * 2))  # enough caller/callee pairs to keep each idle
    idle_users = max(0, (args.devices - pairs * (1 + callee_devices)))
    print(f"seeding {pairs} caller/callee pairs and {idle_users} idle devices…", flush=True)
    callers = await seed(db_url, pairs, 1, offset=0)
    callees = await seed(db_url, pairs, callee_devices, offset=pairs)
    idle = await seed(db_url, idle_users, 1, offset=2 * pairs)

    port = free_port()
    env = dict(
        os.environ,
        VISAVIS_DATA_DIR=str(data),
        VISAVIS_DATABASE_URL=db_url,
        VISAVIS_SHARED_SECRET="bench",
        VISAVIS_LOG_LEVEL="warning",
    )
    server = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "visavis.cli", "serve", "--role", "signaling", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"ws://127.0.0.1:{port}/ws"
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                    break
            except OSError:
                await asyncio.sleep(0.05)
        base_rss = rss_mib(server.pid)
        print(f"server up, RSS {base_rss:.0f} MiB; connecting devices…", flush=True)
        tokens = [t for _, ts in idle for t in ts]
        clients: list[Client] = []
        t0 = time.perf_counter()
        for start in range(0, len(tokens), 200):
            clients += await asyncio.gather(*(connect(url, t) for t in tokens[start : start + 200]))
        caller_clients = [await connect(url, ts[0]) for _, ts in callers]
        callee_clients = [[await connect(url, t) for t in ts] for _, ts in callees]
        connected = len(clients) + len(caller_clients) + sum(map(len, callee_clients))
        connect_time = time.perf_counter() - t0
        await asyncio.sleep(1.0)
        conn_rss = rss_mib(server.pid)
        per_device_kib = (conn_rss - base_rss) * 1024 / max(1, connected)
        print(
            f"{connected} devices connected in {connect_time:.1f} s; RSS {conn_rss:.0f} MiB "
            f"({per_device_kib:.1f} KiB per device)",
            flush=True,
        )

        latencies: list[float] = []
        failures = 0
        interval = 1.0 / args.rate
        total = int(args.rate * args.duration)
        cpu0 = cpu_seconds(server.pid)
        started = time.perf_counter()
        pending: list[asyncio.Task[None]] = []

        async def one_call(i: int) -> None:
            nonlocal failures
            caller = caller_clients[i % pairs]
            ringers = callee_clients[i % pairs]
            handle = callees[i % pairs][0]
            rid = i + 1
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            caller.results[rid] = fut
            sent = time.perf_counter()
            await caller.ws.send(
                json.dumps(
                    {"type": "call.invite", "id": rid, "handles": [handle], "media": "audio"}
                )
            )
            try:
                result = await asyncio.wait_for(fut, 10)
                call_id = result.get("call_id")
                if not call_id:
                    failures += 1
                    return
                deadline = time.perf_counter() + 10
                while any(call_id not in c.rings for c in ringers):
                    if time.perf_counter() > deadline:
                        failures += 1
                        return
                    await asyncio.sleep(0.001)
                latencies.extend(c.rings.pop(call_id) - sent for c in ringers)
                await caller.ws.send(json.dumps({"type": "call.cancel", "call_id": call_id}))
            except TimeoutError:
                failures += 1

        for i in range(total):
            target = started + i * interval
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(one_call(i)))
        await asyncio.gather(*pending)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(server.pid) - cpu0
        for c in [*clients, *caller_clients, *(c for cs in callee_clients for c in cs)]:
            await c.ws.close()
        return {
            "devices_connected": connected,
            "rss_mib": round(conn_rss, 1),
            "kib_per_device": round(per_device_kib, 2),
            "calls": total,
            "failures": failures,
            "setups_per_s": round(total / elapsed, 1),
            "ring_p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
            "ring_p99_ms": round(percentile(latencies, 0.99) * 1000, 2) if latencies else None,
            "server_cpu_s_per_setup_ms": round(cpu / max(1, total) * 1000, 3),
        }
    finally:
        server.terminate()
        try:
            await asyncio.wait_for(server.wait(), 10)
        except TimeoutError:
            server.kill()



async def seed(db_url: str, users: int, devices: int, offset: int) -> list[tuple[str, list[str]]]:
    """Users u<i>@bench.test with devices, written straight to the database; returns
    (handle, [device tokens]). One password hash for all: argon2 is slow by design."""
    store = open_store(db_url)
    await store.open()
    password_hash = hash_password("benchmark-password")
    now = time.time()
    out = []
    for i in range(offset, offset + users):
        user = await store.create_user(
            user_id=new_id(),
            handle=f"u{i}@bench.test",
            display_name=f"u{i}",
            password_hash=password_hash,
            now=now,
        )
        tokens = []
        for d in range(devices):
            token = new_token()
            await store.create_device(
                device_id=new_id(),
                user_id=user.id,
                name=f"d{d}",
                kind="bot",
                token_hash=hash_token(token),
                now=now,
            )
            tokens.append(token)
        out.append((f"u{i}@bench.test", tokens))
    await store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=2000, help="connected devices in total")
    parser.add_argument("--rate", type=float, default=200, help="call setups per second")
    parser.add_argument("--duration", type=float, default=10, help="seconds of calling")
    parser.add_argument("--callee-devices", type=int, default=2, help="devices per callee")
    parser.add_argument("--runs", type=int, default=1, help="repeat and report medians")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.devices * 2 + 1000))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    results = [asyncio.run(run(args)) for _ in range(args.runs)]
    for r in results:
        print(json.dumps(r))
    if len(results) > 1:
        keys = [k for k, v in results[0].items() if isinstance(v, int | float)]
        print("median:", json.dumps({k: statistics.median(r[k] for r in results) for k in keys}))


if __name__ == "__main__":
    main()
