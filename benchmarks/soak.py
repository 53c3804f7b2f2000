"""Soak: many devices on two signaling nodes (PostgreSQL + Redis) for a long time, calls
ringing, connecting, exchanging signals and ending at a steady rate.

Two real ``visavis serve --role signaling`` processes share a fresh PostgreSQL database
and a fresh Redis key prefix (both removed afterwards). Every user has two devices, one on
each node, so every ring crosses nodes. Each call: a caller invites a callee, both callee
devices ring, one answers (alternating nodes), caller and answerer exchange a description
and two candidates each, the caller hangs up. What every device must receive for every
call is known (see ``EXPECTED``); at the end, each (device, call, event type) count is
compared with it: fewer is a lost event, more a duplicated one. Each connection's ``seq``
must also go up by exactly one. Server errors are error replies to our requests plus
ERROR lines or tracebacks in the nodes' logs. Each node's RSS (process tree) is sampled;
growth is reported from the end of the warm-up to the end.

    python benchmarks/soak.py --quick                       # 500 devices, 30 s
    python benchmarks/soak.py --devices 10000 --duration 600 --rate 10

All traffic stays on 127.0.0.1; every loop is bounded by --duration and timeouts. Exits
non-zero if any event was lost or duplicated, or any server error was seen.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy.ext.asyncio import create_async_engine
from tests.services import REDIS_URL, fresh_postgres, fresh_redis_prefix

from visavis.signaling.auth import hash_password, hash_token, new_id, new_token
from visavis.store import open_store
from visavis.store.base import User as StoreUser
from visavis.store.schema import USER_COLS, user_values
from visavis.store.schema import devices as devices_table
from visavis.store.schema import users as users_table

CONNECT_PATIENCE = 900.0  # seconds one device keeps retrying its connection
WAIT = 15.0  # seconds any one expected event or answer may take before it counts as lost

# Events each role receives in one call (see CallService: invite, answer, signal, leave).
EXPECTED: dict[str, dict[str, int]] = {
    "caller": {"call.ringing": 1, "call.participant": 1, "call.signal": 3},
    "answerer": {"call.incoming": 1, "call.signal": 3, "call.participant": 1, "call.ended": 1},
    "other": {"call.incoming": 1, "call.stop_ringing": 1},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_rss_mib(pid: int) -> float:
    """RSS of ``pid`` and its descendants (a node may supervise child processes)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children[ppid].append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Tally:
    """Everything the devices saw, for the final check."""

    events: collections.Counter[tuple[str, str, str]] = field(default_factory=collections.Counter)
    seq_gaps: int = 0
    seq_repeats: int = 0
    error_replies: collections.Counter[str] = field(default_factory=collections.Counter)
    timeouts: collections.Counter[str] = field(default_factory=collections.Counter)
    closed: int = 0
    connect_retries: int = 0
    hello_overloaded: int = 0
    late_answers: int = 0
    ring_ms: list[float] = field(default_factory=list)
    rang_at: dict[tuple[str, str], float] = field(default_factory=dict)
    waiters: dict[tuple[str, str, str], asyncio.Future[dict[str, Any]]] = field(
        default_factory=dict
    )


class Overloaded(Exception):
    """A node answered the hello with ``overloaded`` (retry later)."""


class Device:
    """One device's WebSocket: requests with ids, events counted into the tally."""

    def __init__(self, device_id: str, token: str, node: int, tally: Tally) -> None:
        self.device_id, self.token, self.node, self.tally = device_id, token, node, tally
        self.ws: Any = None
        self.last_seq = 0
        self.acked = 0
        self.answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.ids = itertools.count(1)
        self.reader: asyncio.Task[None] | None = None

    async def connect(self, url: str) -> None:
        """Connect and say hello. A node refusing the hello as ``overloaded`` (its
        ``max_concurrent_requests``) or timing out is retried with exponential back-off
        (1, 2, 4 ... 16 s, jittered: refused clients must not come back all at once);
        each retry is counted. Gives up after CONNECT_PATIENCE seconds."""
        give_up = time.monotonic() + CONNECT_PATIENCE
        delay = 1.0
        while True:
            try:
                await self._connect(url)
                return
            except Overloaded:
                self.tally.hello_overloaded += 1
            except (
                TimeoutError,
                OSError,
                websockets.InvalidHandshake,
                websockets.ConnectionClosed,
            ):
                self.tally.connect_retries += 1
            if self.ws is not None:
                await self.ws.close()
            if time.monotonic() + delay > give_up:
                raise RuntimeError(f"device {self.device_id} not connected in {CONNECT_PATIENCE} s")
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # back-off, jittered
            delay = min(delay * 2, 16.0)

    async def _connect(self, url: str) -> None:
        self.ws = await websockets.connect(url, max_size=2**20, ping_interval=None, open_timeout=60)
        await self.ws.send(json.dumps({"type": "hello", "token": self.token}))
        welcome = json.loads(await asyncio.wait_for(self.ws.recv(), 60))
        if welcome.get("type") == "error" and welcome.get("code") == "overloaded":
            raise Overloaded
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"hello refused: {welcome}")
        self.last_seq = self.acked = welcome["head"]
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        tally = self.tally
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                kind = msg.get("type")
                if kind in ("result", "error", "pong"):
                    future = self.answers.pop(msg.get("re"), None)
                    if future is None:
                        tally.late_answers += 1  # after its request timed out
                    elif not future.done():
                        future.set_result(msg)
                    continue
                seq = msg.get("seq")
                if seq is not None:
                    if seq > self.last_seq + 1:
                        tally.seq_gaps += seq - self.last_seq - 1
                    elif seq <= self.last_seq:
                        tally.seq_repeats += 1
                    self.last_seq = max(self.last_seq, seq)
                key = (self.device_id, msg.get("call_id", ""), kind)
                if kind == "call.incoming":
                    tally.rang_at[key[:2]] = time.perf_counter()
                tally.events[key] += 1
                waiter = tally.waiters.pop(key, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(msg)
                if self.last_seq - self.acked >= 20:
                    self.acked = self.last_seq
                    await self.ws.send(json.dumps({"type": "ack", "seq": self.acked}))
        except websockets.ConnectionClosed:
            pass
        finally:
            tally.closed += 1

    async def request(self, type_: str, **fields: Any) -> dict[str, Any] | None:
        """Send a request; its result, or None after an error reply or a timeout (tallied)."""
        rid = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.answers[rid] = future
        await self.ws.send(json.dumps({"type": type_, "id": rid, **fields}))
        try:
            answer = await asyncio.wait_for(future, WAIT)
        except TimeoutError:
            self.answers.pop(rid, None)
            self.tally.timeouts[type_] += 1
            return None
        if answer["type"] == "error":
            self.tally.error_replies[f"{type_}:{answer.get('code')}"] += 1
            return None
        return answer

    def expect(self, call_id: str, kind: str) -> asyncio.Future[dict[str, Any]]:
        """A future for this device's next ``kind`` event of ``call_id`` (or one already in)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if self.tally.events[(self.device_id, call_id, kind)]:
            future.set_result({})
        else:
            self.tally.waiters[(self.device_id, call_id, kind)] = future
        return future


@dataclass
class User:
    handle: str
    devices: list[Device]


async def seed(db_url: str, users: int, tally: Tally) -> list[User]:
    """Users s<i>@soak.test with two devices each, written straight to the database in
    bulk (a multi-row INSERT per 1,000 rows: seconds for 10,000 devices, where one
    store call per row took 6-8 minutes on the loaded machine). The rows are the ones
    the store itself writes (its schema and row helpers)."""
    store = open_store(db_url)
    await store.open()  # migrates the fresh database
    await store.close()
    password_hash = hash_password("soak-password")
    now = time.time()
    user_rows: list[dict[str, Any]] = []
    device_rows: list[dict[str, Any]] = []
    out: list[User] = []
    for i in range(users):
        user = StoreUser(new_id(), f"s{i}@soak.test", f"s{i}", password_hash, now)
        user_rows.append(dict(zip((*USER_COLS, "handle_key"), user_values(user), strict=True)))
        devices = []
        for node in (0, 1):
            token, device_id = new_token(), new_id()
            device_rows.append(
                dict(
                    id=device_id,
                    user_id=user.id,
                    name=f"d{node}",
                    kind="bot",
                    token_hash=hash_token(token),
                    created_at=now,
                    revoked_at=None,
                    push_subscription=None,
                )
            )
            devices.append(Device(device_id, token, node, tally))
        out.append(User(user.handle, devices))
    engine = create_async_engine(db_url)
    try:
        async with engine.begin() as conn:
            for table, rows in ((users_table, user_rows), (devices_table, device_rows)):
                for start in range(0, len(rows), 1000):
                    await conn.execute(table.insert().values(rows[start : start + 1000]))
    finally:
        await engine.dispose()
    return out


class Soak:
    def __init__(self, args: argparse.Namespace, users: list[User], tally: Tally) -> None:
        self.args, self.users, self.tally = args, users, tally
        self.free = collections.deque(users)
        random.Random(1).shuffle(self.free)
        self.expected: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.failed_ids: set[str] = set()
        self.calls_started = self.calls_completed = self.calls_failed = self.skipped = 0

    async def call(self, i: int) -> None:
        if len(self.free) < 2:
            self.skipped += 1
            return
        caller, callee = self.free.popleft(), self.free.popleft()
        self.calls_started += 1
        if await self._call(i, caller, callee) is None:
            self.calls_failed += 1  # its users may still be in it: not reused
        else:
            self.calls_completed += 1
            self.free.extend((caller, callee))

    async def _call(self, i: int, caller: User, callee: User) -> str | None:
        """Run one call; its id if it went as scripted, else None (its id in failed_ids)."""
        me = caller.devices[i % 2]
        answerer, other = callee.devices[(i // 2) % 2], callee.devices[1 - (i // 2) % 2]
        sent = time.perf_counter()
        result = await me.request("call.invite", handles=[callee.handle], media="video")
        if result is None:
            return None
        call_id: str = result["call_id"]
        if await self._script(call_id, sent, me, answerer, other):
            return call_id
        self.failed_ids.add(call_id)
        return None

    async def _script(
        self, call_id: str, sent: float, me: Device, answerer: Device, other: Device
    ) -> bool:
        for role, device in (("caller", me), ("answerer", answerer), ("other", other)):
            for kind, count in EXPECTED[role].items():
                self.expected[(device.device_id, call_id, kind)] += count
        rings = [answerer.expect(call_id, "call.incoming"), other.expect(call_id, "call.incoming")]
        try:
            await asyncio.wait_for(asyncio.gather(*rings), WAIT)
            for device in (answerer, other):
                rang = self.tally.rang_at.pop((device.device_id, call_id))
                self.tally.ring_ms.append((rang - sent) * 1000)
            await asyncio.sleep(self.args.ring_time)
            joined = me.expect(call_id, "call.participant")
            if await answerer.request("call.answer", call_id=call_id) is None:
                return False
            await asyncio.wait_for(joined, WAIT)
            offer = {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\n"}
            answer = {"type": "answer", "sdp": "v=0\r\no=- 2 1 IN IP4 0.0.0.0\r\ns=-\r\n"}
            for device, description in ((me, offer), (answerer, answer)):
                signals: list[dict[str, Any]] = [{"description": description}]
                signals += [
                    {"candidate": {"candidate": f"candidate:{n} 1 udp {n + 1} 192.0.2.{n + 1} 9"}}
                    for n in range(2)
                ]
                for signal in signals:
                    if await device.request("call.signal", call_id=call_id, **signal) is None:
                        return False
            await asyncio.sleep(self.args.hold)
            ended = answerer.expect(call_id, "call.ended")
            stopped = other.expect(call_id, "call.stop_ringing")
            if await me.request("call.leave", call_id=call_id) is None:
                return False
            await asyncio.wait_for(asyncio.gather(ended, stopped), WAIT)
        except TimeoutError:
            return False
        return True


async def start_node(
    index: int, db_url: str, prefix: str, data: Path, log: Path
) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    env = dict(
        os.environ,
        VISAVIS_DATA_DIR=str(data / f"node{index}"),
        VISAVIS_DATABASE_URL=db_url,
        VISAVIS_BUS_URL=REDIS_URL,
        VISAVIS_REDIS_PREFIX=prefix,
        VISAVIS_NODE_ID=f"soak{index}",
        VISAVIS_SHARED_SECRET="soak",
        VISAVIS_LOG_LEVEL="warning",
    )
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "visavis.cli", "serve", "--role", "signaling"],
            *["--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"node {index} exited: {tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            await asyncio.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"node {index} did not listen within 60 s")


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


def log_errors(text: str) -> list[str]:
    return [
        line
        for line in text.splitlines()
        if "Traceback" in line or " ERROR" in line or line.startswith("ERROR")
    ]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tally = Tally()
    data = Path(tempfile.mkdtemp(prefix="visavis-soak-"))
    async with fresh_postgres() as db_url, fresh_redis_prefix() as prefix:
        t0 = time.perf_counter()
        users = await seed(db_url, args.devices // 2, tally)
        print(
            f"seeded {len(users)} users x 2 devices in {time.perf_counter() - t0:.0f} s", flush=True
        )
        procs: list[asyncio.subprocess.Process] = []
        try:
            ports = []
            for index in (0, 1):
                log = data / f"node{index}.log"
                proc, port = await start_node(index, db_url, prefix, data, log)
                procs.append(proc)
                ports.append(port)
            t0 = time.perf_counter()
            devices = [d for u in users for d in u.devices]
            window = asyncio.Semaphore(args.connect_window)
            connected = 0

            async def connect(d: Device) -> None:
                nonlocal connected
                async with window:
                    await d.connect(f"ws://127.0.0.1:{ports[d.node]}/ws")
                connected += 1
                if connected % 1000 == 0:
                    print(
                        f"  {connected} connected ({time.perf_counter() - t0:.0f} s, "
                        f"{tally.hello_overloaded} hellos refused as overloaded, "
                        f"{tally.connect_retries} retries)",
                        flush=True,
                    )

            await asyncio.gather(*(connect(d) for d in devices))
            connect_s = time.perf_counter() - t0
            print(f"{len(devices)} devices connected in {connect_s:.0f} s", flush=True)
            result = await soak(args, users, tally, procs)
            result["connect_s"] = round(connect_s, 1)
            print(json.dumps(result), flush=True)  # before the (slow) goodbyes
            for start in range(0, len(devices), 500):
                await asyncio.gather(*(d.ws.close() for d in devices[start : start + 500]))
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.terminate()
            for proc in procs:
                try:
                    await asyncio.wait_for(proc.wait(), 20)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
        errors = [
            f"node{i}: {line}"
            for i in (0, 1)
            for line in log_errors((data / f"node{i}.log").read_text(errors="replace"))
        ]
        result["server_log_errors"] = len(errors)
        if errors:
            print("\n".join(errors[:20]))
        return result


async def soak(
    args: argparse.Namespace, users: list[User], tally: Tally, procs: list[Any]
) -> dict[str, Any]:
    driver = Soak(args, users, tally)
    cpu0 = [tree_cpu_s(p.pid) for p in procs]
    samples: list[tuple[float, list[float]]] = []
    loads: list[float] = []
    started = time.perf_counter()
    interval = 1.0 / args.rate
    total = int(args.rate * args.duration)
    next_sample = started
    tasks: set[asyncio.Task[None]] = set()
    for i in range(total):
        now = time.perf_counter()
        if now >= next_sample:
            samples.append((now - started, [tree_rss_mib(p.pid) for p in procs]))
            loads.append(os.getloadavg()[0])
            rss = ", ".join(f"{r:.0f}" for r in samples[-1][1])
            print(
                f"t={now - started:5.0f} s calls {driver.calls_completed}/{driver.calls_started}"
                f" failed {driver.calls_failed} RSS MiB [{rss}] load {loads[-1]:.1f}",
                flush=True,
            )
            next_sample += args.sample_every
        delay = started + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(driver.call(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=4 * WAIT + args.hold + args.ring_time)
    elapsed = time.perf_counter() - started
    samples.append((elapsed, [tree_rss_mib(p.pid) for p in procs]))
    # Events still in flight after the last answer: wait until every expected one is in
    # (or WAIT passes: then they count as lost).
    deadline = time.perf_counter() + WAIT
    while time.perf_counter() < deadline:
        if all(tally.events.get(k, 0) >= n for k, n in driver.expected.items()):
            break
        await asyncio.sleep(0.1)  # polling the tally the readers fill
    cpu = [tree_cpu_s(p.pid) - c for p, c in zip(procs, cpu0, strict=True)]

    lost = duplicated = 0
    # Only calls that went as scripted: an invite that timed out still made a call whose
    # id the script never learned, and a failed call's later events follow no table.
    known = {k[1] for k in driver.expected}
    done = known - driver.failed_ids
    checked = {k for k in driver.expected if k[1] in done}
    checked |= {k for k in tally.events if k[1] in done}
    mismatches: list[str] = []
    for key in checked:
        got, want = tally.events.get(key, 0), driver.expected.get(key, 0)
        lost += max(0, want - got)
        duplicated += max(0, got - want)
        if got != want and len(mismatches) < 20:
            mismatches.append(f"device {key[0]} call {key[1]} {key[2]}: got {got}, want {want}")
    warm = [s for s in samples if s[0] >= args.warmup] or samples[-1:]
    per_node = []
    for n in range(len(procs)):
        start_rss, end_rss = warm[0][1][n], warm[-1][1][n]
        per_node.append(
            {
                "rss_after_warmup_mib": round(start_rss, 1),
                "rss_end_mib": round(end_rss, 1),
                "growth_mib": round(end_rss - start_rss, 1),
                "growth_pct": round(100 * (end_rss - start_rss) / max(start_rss, 1), 1),
                "rss_max_mib": round(max(s[1][n] for s in samples), 1),
                "cpu_s": round(cpu[n], 1),
                "cpu_ms_per_call": round(1000 * cpu[n] / max(1, driver.calls_started), 1),
            }
        )
    return {
        "devices": len(users) * 2,
        "duration_s": round(elapsed, 1),
        "calls_started": driver.calls_started,
        "calls_completed": driver.calls_completed,
        "calls_failed": driver.calls_failed,
        "calls_skipped": driver.skipped,
        "events_expected": sum(driver.expected[k] for k in checked),
        "events_received": sum(tally.events[k] for k in checked),
        "events_lost": lost,
        "events_duplicated": duplicated,
        # calls whose invite got no answer in time (the script never learned their id)
        "events_of_unknown_calls": sum(
            v for k, v in tally.events.items() if k[1] and k[1] not in known
        ),
        "seq_gaps": tally.seq_gaps,
        "seq_repeats": tally.seq_repeats,
        "error_replies": dict(tally.error_replies),
        "request_timeouts": dict(tally.timeouts),
        "late_answers": tally.late_answers,
        "connections_closed_early": tally.closed,
        "connect_retries": tally.connect_retries,
        "hellos_refused_overloaded": tally.hello_overloaded,
        "ring_p50_ms": round(statistics.median(tally.ring_ms), 1) if tally.ring_ms else None,
        "ring_p99_ms": round(percentile(tally.ring_ms, 0.99), 1) if tally.ring_ms else None,
        "nodes": per_node,
        "load_avg_1m": {
            "min": min(loads, default=0.0),
            "median": round(statistics.median(loads), 1) if loads else None,
            "max": max(loads, default=0.0),
        },
        "mismatches": mismatches,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, help="devices, 2 per user [10000]")
    parser.add_argument("--duration", type=float, help="seconds of calling [600]")
    parser.add_argument("--rate", type=float, help="calls started per second [2]")
    parser.add_argument("--hold", type=float, default=3.0, help="seconds a call stays up")
    parser.add_argument("--ring-time", type=float, default=0.5, help="seconds before answering")
    parser.add_argument("--warmup", type=float, help="seconds before RSS counts [120]")
    parser.add_argument("--sample-every", type=float, default=10, help="RSS sampling period")
    parser.add_argument("--connect-window", type=int, default=64, help="devices connecting at once")
    parser.add_argument("--quick", action="store_true", help="500 devices, 30 s, warm-up 10 s")
    args = parser.parse_args()
    defaults = (500, 30, 2, 10) if args.quick else (10_000, 600, 2, 120)
    for name, default in zip(("devices", "duration", "rate", "warmup"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.devices * 2 + 2000))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    try:
        import uvloop

        result = uvloop.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    print(json.dumps(result, indent=1))
    bad = (
        result["events_lost"]
        or result["events_duplicated"]
        or result["seq_gaps"]
        or result["seq_repeats"]
        or result["error_replies"]
        or result["request_timeouts"]
        or result["server_log_errors"]
    )
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
