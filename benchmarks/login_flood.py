"""Media latency under a login flood and 200 call setups/s, against the real `visavis serve`.

    .venv/bin/python benchmarks/login_flood.py --runs 3 --seconds 10 [--throttle off]
        [--switch-interval-ms 5] [--signaling-nice 0]

The budget (issue 13): under a login flood from several clients plus 200 call setups/s,
STUN answers and SFU forwarding keep p99 < 5 ms. The last lines say PASS or FAIL against
it, from the medians of the runs: FAIL when either p99 is over 5 ms, or when the load was
not what the budget is about (setups sent at under 95 % of ``--rate``, or no flood).

Starts ``visavis serve`` (role all: signaling in it, the relay and the SFU in child
processes, as the README runs it) on free ports, then measures twice, each time for
``--seconds``:

- quiet: media only;
- flood: ``--flooders`` clients, each from its own source address (127.0.0.10,
  127.0.0.11, ...: several clients, so each gets the per-address throttle's free
  attempts), posting ``/api/login`` with wrong passwords in a loop (a new random handle
  each time, so only the per-address throttle applies) plus
  ``--rate`` call setups per second (invite, ring on the callee's device, cancel) over
  WebSockets of seeded devices.

Media, in both phases: STUN Binding round trips to the relay (one every 2 ms; a probe
unanswered in 0.5 s is counted lost and the next one goes) and SFU forwarding latency
(three synthetic participants publishing audio and three simulcast layers, send time in
the payload, see ``sfu_load.py``). The STUN prober and the load run in processes of their
own, the SFU load in this one, so that no client waits behind another.

``--throttle off`` raises the sign-in limits out of reach, so that every login costs a
password hash: the worst case for CPU (with the throttle, the flood is refused after 20
failures from the address and costs only HTTP work).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sfu_load import SECRET, Synthetic, cpu_seconds, pump
from signaling_ring import seed
from tests.served import children, serve

STUN_INTERVAL = 0.002
BUDGET_MS = 5.0


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 3)


# ---------------------------------------------------------------------- STUN prober
def stun_worker(port: int, seconds: float) -> dict[str, Any]:
    """Binding requests to 127.0.0.1:port every 2 ms for ``seconds``: RTTs in ms."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.5)
    rtts: list[float] = []
    lost = 0
    end = time.perf_counter() + seconds
    next_at = time.perf_counter()
    while time.perf_counter() < end:
        tid = os.urandom(12)
        sent = time.perf_counter()
        sock.sendto(b"\x00\x01\x00\x00\x21\x12\xa4\x42" + tid, ("127.0.0.1", port))
        while True:
            try:
                data = sock.recv(2048)
            except TimeoutError:
                lost += 1  # retried by the next probe
                break
            if data[8:20] == tid:
                rtts.append((time.perf_counter() - sent) * 1000)
                break
        next_at += STUN_INTERVAL
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.perf_counter()
    return {"rtts": rtts, "lost": lost}


# ---------------------------------------------------------------------- load
class Device:
    """A signed-in device's WebSocket: answers to its requests, and when each ring came."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.rings: dict[str, float] = {}
        self.ring_waiters: dict[str, asyncio.Future[float]] = {}
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str, token: str) -> Device:
        import websockets

        ws = await websockets.connect(url, max_size=2**20, ping_interval=None)
        await ws.send(json.dumps({"type": "hello", "token": token}))
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome", welcome
        return cls(ws)

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                msg = json.loads(raw)
                kind = msg.get("type")
                if kind == "call.incoming":
                    waiter = self.ring_waiters.pop(msg["call_id"], None)
                    if waiter is None:
                        self.rings[msg["call_id"]] = time.perf_counter()
                    elif not waiter.done():
                        waiter.set_result(time.perf_counter())
                elif kind in ("result", "error"):
                    answer = self.answers.pop(msg.get("re"), None)
                    if answer is not None and not answer.done():
                        answer.set_result(msg)
                if "seq" in msg and msg["seq"] % 50 == 0:
                    await self.ws.send(json.dumps({"type": "ack", "seq": msg["seq"]}))

    async def request(self, rid: int, **fields: Any) -> dict[str, Any]:
        answer = self.answers[rid] = asyncio.get_running_loop().create_future()
        await self.ws.send(json.dumps({"id": rid, **fields}))
        return await asyncio.wait_for(answer, 10)

    async def ring(self, call_id: str) -> float:
        """When ``call_id`` rang on this device (waits up to 10 s)."""
        if call_id in self.rings:
            return self.rings.pop(call_id)
        waiter = self.ring_waiters[call_id] = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(waiter, 10)
        finally:
            self.ring_waiters.pop(call_id, None)


async def load_worker(args: argparse.Namespace, pairs: list[dict[str, str]]) -> dict[str, Any]:
    import httpx

    ws_url = args.url.replace("http", "ws", 1) + "/ws"
    callers = [await Device.connect(ws_url, p["caller"]) for p in pairs]
    callees = [await Device.connect(ws_url, p["callee"]) for p in pairs]
    statuses: dict[str, int] = {}
    refusals: dict[str, int] = {}
    rings: list[float] = []
    failures = 0
    end = time.perf_counter() + args.seconds

    async def flood(http: httpx.AsyncClient) -> None:
        while time.perf_counter() < end:
            body = {
                "handle": f"x{secrets.token_hex(4)}@example.com",
                "password": "wrong password",
                "device_name": "flood",
            }
            try:
                r = await http.post(f"{args.url}/api/login", json=body)
                key = str(r.status_code)
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            statuses[key] = statuses.get(key, 0) + 1

    async def one_call(i: int) -> None:
        nonlocal failures
        caller, callee = callers[i % len(pairs)], callees[i % len(pairs)]
        handle = pairs[i % len(pairs)]["callee_handle"]
        sent = time.perf_counter()
        try:
            answer = await caller.request(
                i + 1, type="call.invite", handles=[handle], media="audio"
            )
            call_id = answer.get("call_id")
            if not call_id:
                failures += 1  # refused: by code (e.g. "overloaded": the server shed it)
                code = str(answer.get("code"))
                refusals[code] = refusals.get(code, 0) + 1
                return
            rings.append((await callee.ring(call_id) - sent) * 1000)
            await caller.ws.send(json.dumps({"type": "call.cancel", "call_id": call_id}))
        except (TimeoutError, OSError):
            failures += 1

    sending = [0.0]  # how long the setups took to send (the rate's window)

    async def calls() -> int:
        tasks = []
        started = time.perf_counter()
        i = 0
        while time.perf_counter() < end:
            delay = started + i / args.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one_call(i)))
            i += 1
        sending[0] = time.perf_counter() - started
        await asyncio.gather(*tasks)
        return i

    async with contextlib.AsyncExitStack() as stack:
        clients = [  # one client per source address: several flooders, not one
            await stack.enter_async_context(
                httpx.AsyncClient(
                    timeout=30,
                    transport=httpx.AsyncHTTPTransport(local_address=f"127.0.0.{10 + i}"),
                )
            )
            for i in range(args.flooders)
        ]
        started = time.perf_counter()
        done = await asyncio.gather(calls(), *(flood(http) for http in clients))
        wall = time.perf_counter() - started
    for c in [*callers, *callees]:
        await c.ws.close()
    return {
        "logins_per_s": round(sum(statuses.values()) / wall, 1),
        "login_statuses": statuses,
        # sent per second while sending: not diluted by the wait for the last rings
        "setups_per_s": round((done[0] or 0) / max(sending[0], 1e-9), 1),
        "setup_failures": failures,
        "setup_refusals": refusals,
        "ring_ms_p50": pct(rings, 0.5),
        "ring_ms_p99": pct(rings, 0.99),
    }


# ---------------------------------------------------------------------- orchestration
def _worker(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), *argv], stdout=subprocess.PIPE, text=True
    )


def _result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=120)
    return dict(json.loads(out.strip().splitlines()[-1]))


def tree_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of `visavis serve` (signaling) and of each child (relay, SFU)."""
    found = {"signaling": cpu_seconds(pid)}
    for name, child in children(pid).items():
        with contextlib.suppress(OSError):
            found[name.removeprefix("visavis-")] = cpu_seconds(child)
    return found


async def _phase(
    people: list[Synthetic], pid: int, stun_port: int, seconds: float, load: list[str] | None
) -> dict[str, Any]:
    warmup = 1.0
    stun = _worker("--worker", "stun", "--port", str(stun_port), "--seconds", str(seconds + 2))
    loader = _worker("--worker", "load", "--seconds", str(seconds + 2), *load) if load else None
    cpu0 = tree_cpu(pid)
    window = await pump(
        people, [(p.sock, p.rx, None) for p in people], pid, warmup, seconds, sample=4
    )
    cpu1 = tree_cpu(pid)
    cpu = {k: round((v - cpu0.get(k, 0.0)) / (warmup + seconds), 2) for k, v in cpu1.items()}
    probes = _result(stun)
    out: dict[str, Any] = {
        "stun_ms_p50": pct(probes["rtts"], 0.5),
        "stun_ms_p99": pct(probes["rtts"], 0.99),
        "stun_ms_max": pct(probes["rtts"], 1.0),
        "stun_probes": len(probes["rtts"]),
        "stun_lost": probes["lost"],
        "sfu_ms_p50": window.summary()["latency_ms_p50"],
        "sfu_ms_p99": window.summary()["latency_ms_p99"],
        "sfu_samples": len(window.latencies),
        "server_cpu_share": round(sum(cpu.values()), 2),
        **{f"cpu_share_{k}": v for k, v in cpu.items()},
    }
    if loader is not None:
        out.update(_result(loader))
    return out


async def one_run(args: argparse.Namespace) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="visavis-flood-"))
    db_url = f"sqlite+aiosqlite:///{data / 'visavis.sqlite3'}"
    pairs_n = max(1, int(args.rate))  # each pair places a call about once a second
    callers = await seed(db_url, pairs_n, 1, offset=0)
    callees = await seed(db_url, pairs_n, 1, offset=pairs_n)
    pairs_file = data / "pairs.json"
    pairs_file.write_text(
        json.dumps(
            [
                {"caller": c[1][0], "callee": e[1][0], "callee_handle": e[0]}
                for c, e in zip(callers, callees, strict=True)
            ]
        )
    )
    env = {
        "VISAVIS_SHARED_SECRET": SECRET,
        "VISAVIS_LOG_LEVEL": "warning",
        "VISAVIS_SFU__INITIAL_BANDWIDTH": "10000000",
        "VISAVIS_SFU__DEAD_TIMEOUT": "60",
        "VISAVIS_SIGNALING__RATE_LIMIT_PER_SECOND": "1000",
        "VISAVIS_SIGNALING__RATE_LIMIT_BURST": "1000",
        # The prober's 500 Binding requests/s from one address are over the relay's
        # unauthenticated-request limit (20/s): raise it so that no probe is refused.
        "VISAVIS_RELAY__UNAUTH_RATE": "5000",
        "VISAVIS_RELAY__UNAUTH_BURST": "5000",
    }
    if args.throttle == "off":
        env["VISAVIS_SIGNALING__LOGIN_FAILURES_PER_ADDRESS"] = "100000000"
    if args.switch_interval_ms is not None:
        env["VISAVIS_SWITCH_INTERVAL_MS"] = str(args.switch_interval_ms)
    if args.signaling_nice is not None:
        env["VISAVIS_SIGNALING_NICE"] = str(args.signaling_nice)
    with serve(data, env=env) as server:
        stun_port = int(server.url("relay", "stun:").rsplit(":", 1)[1])
        n = 3
        people = [Synthetic(i, server.sfu_url, n - 1, loud=(i == 0)) for i in range(n)]
        for p in people:
            await p.join()
        await asyncio.sleep(1.0)  # renegotiations settle
        for p in people:
            await p.offer()
            p.connect_media()
        quiet = await _phase(people, server.pid, stun_port, args.seconds, None)
        load = ["--url", server.http_url, "--pairs", str(pairs_file), "--rate", str(args.rate),
                "--flooders", str(args.flooders)]  # fmt: skip
        flood = await _phase(people, server.pid, stun_port, args.seconds, load)
        for p in people:
            for task in p.tasks:
                task.cancel()
            if p.ws is not None:
                await p.ws.close()
            p.sock.close()
    return {"quiet": quiet, "flood": flood}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0, help="call setups per second")
    parser.add_argument("--flooders", type=int, default=8)
    parser.add_argument("--throttle", choices=["on", "off"], default="on")
    parser.add_argument(
        "--switch-interval-ms", type=float, help="the server's GIL switch interval (setting)"
    )
    parser.add_argument(
        "--signaling-nice",
        type=int,
        help="the server's signaling_nice setting: nice steps signaling runs below the "
        "relay and the SFU (0: same priority)",
    )
    parser.add_argument("--worker", choices=["stun", "load"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--pairs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "stun":
        print(json.dumps(stun_worker(args.port, args.seconds)))
        return
    if args.worker == "load":
        pairs = json.loads(Path(args.pairs).read_text())
        print(json.dumps(asyncio.run(load_worker(args, pairs))))
        return
    runs = []
    loads = []
    for i in range(args.runs):
        result = asyncio.run(one_run(args))
        loads.append(os.getloadavg()[0])
        print(f"run {i + 1} (load {loads[-1]:.1f}): {json.dumps(result)}", flush=True)
        runs.append(result)
    print(
        f"\nmedians of {len(runs)} runs (throttle {args.throttle}, switch interval "
        f"{args.switch_interval_ms or 'default'} ms, signaling nice "
        f"{'default' if args.signaling_nice is None else args.signaling_nice}; "
        "load average 1 min "
        f"{min(loads):.1f}-{max(loads):.1f}):"
    )
    medians: dict[str, dict[str, float]] = {}
    for phase in ("quiet", "flood"):
        keys = [k for k, v in runs[0][phase].items() if isinstance(v, int | float)]
        medians[phase] = {
            k: statistics.median(r[phase][k] for r in runs if r[phase].get(k) is not None)
            for k in keys
        }
        print(f"  {phase}: {json.dumps(medians[phase])}")
    verdict, reasons = budget_verdict(medians["flood"], args.rate)
    print(f"\nbudget p99 < {BUDGET_MS:g} ms under the flood + {args.rate:g} setups/s: {verdict}")
    for reason in reasons:
        print(f"  - {reason}")
    sys.exit(0 if verdict == "PASS" else 1)


def budget_verdict(flood: dict[str, float], rate: float) -> tuple[str, list[str]]:
    """PASS only when both p99s are under the budget *and* the load was the budget's."""
    reasons = []
    for what, key in (("STUN answers", "stun_ms_p99"), ("SFU forwarding", "sfu_ms_p99")):
        value = flood.get(key)
        if value is None or value >= BUDGET_MS:
            reasons.append(f"{what} p99 {value} ms (budget < {BUDGET_MS:g} ms)")
    setups = flood.get("setups_per_s", 0.0)
    if setups < 0.95 * rate:
        reasons.append(f"call setups sent at {setups:g}/s, not {rate:g}/s: the load was lighter")
    if not flood.get("logins_per_s"):
        reasons.append("no login was answered: there was no flood")
    return ("FAIL" if reasons else "PASS"), reasons


if __name__ == "__main__":
    main()
