"""Relay benchmark: the same turnutils_uclient load against coturn and visavis, side by side.

Run: ``.venv/bin/python benchmarks/relay_vs_coturn.py`` (add ``--quick`` for a short run).

For each load and server it starts the server alone (coturn: ``turnserver -m 1``, one
relay thread; visavis: ``RelayServer`` in its own process on uvloop), a
``turnutils_peer`` echo peer and ``turnutils_uclient`` with channels (``-c``), while a
probe client sends one 160-byte ChannelData packet every 20 ms through the same server to
the same peer and records round-trip times. It prints relayed packets/s (client->peer and
peer->client both count), loss, probe RTT p50/p99, the server's CPU seconds (from
/proc/<pid>/stat) and CPU microseconds per relayed packet; the ratio is coturn's CPU per
packet over ours (> 1.0: we relay more packets per core-second than coturn).

Only loopback is used; every process started here is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Any

USER, PASSWORD, REALM = "bench", "benchpass", "bench.realm"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_coturn(port: int, min_port: int) -> subprocess.Popen[Any]:
    return subprocess.Popen(
        [
            "turnserver", "-n", "--log-file=stdout", "-L", "127.0.0.1", "-E", "127.0.0.1",
            "--listening-port", str(port), "--allow-loopback-peers", "--no-cli", "-a",
            "-u", f"{USER}:{PASSWORD}", "-r", REALM, "--no-tls", "--no-dtls", "-m", "1",
            "--min-port", str(min_port), "--max-port", str(min_port + 999),
            "--no-software-attribute", "--simple-log",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def start_peer(port: int) -> subprocess.Popen[Any]:
    return subprocess.Popen(
        ["turnutils_peer", "-L", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


SERVE_SNIPPET = """
import asyncio, sys, tempfile
from pathlib import Path
from visavis.config import Settings
from visavis.relay.server import RelayServer
port, min_port, loop_kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
REALM, USER, PASSWORD = sys.argv[4:7]
async def main():
    settings = Settings(data_dir=Path(tempfile.mkdtemp()), shared_secret="x", relay={
        "listening-port": port, "realm": REALM, "user": [USER + ":" + PASSWORD],
        "allowed-peer-ip": ["127.0.0.1"], "min-port": min_port, "max-port": min_port + 999,
        "no-software-attribute": True, "unauth-rate": 10000, "unauth-burst": 10000})
    server = RelayServer.from_settings(settings)
    await server.start()
    await asyncio.Event().wait()
if loop_kind == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""


def start_visavis(port: int, min_port: int, loop_kind: str) -> subprocess.Popen[Any]:
    argv = [sys.executable, "-c", SERVE_SNIPPET, str(port), str(min_port), loop_kind]
    return subprocess.Popen(
        [*argv, REALM, USER, PASSWORD],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def transact(sock: socket.socket, server: tuple[str, int], data: bytes, tid: bytes) -> Any:
    """Send a STUN request and return its answer, retransmitting like a STUN client (RFC
    8489 6.2.1: 0.5 s, doubling, 7 tries) so one lost datagram does not end the run;
    datagrams that answer something else (a late duplicate) are skipped."""
    from visavis.protocol.stun import parse_message

    loop = asyncio.get_running_loop()
    wait = 0.5
    for _ in range(7):
        sock.sendto(data, server)
        deadline = loop.time() + wait
        while (left := deadline - loop.time()) > 0:
            try:
                raw = await asyncio.wait_for(loop.sock_recv(sock, 4096), left)
            except TimeoutError:
                break
            if len(raw) >= 20 and raw[0] < 0x40 and raw[8:20] == tid:
                return parse_message(raw)
        wait *= 2
    raise TimeoutError(f"no answer from {server} after 7 tries")


async def wait_until_serving(server_port: int, peer_port: int, proc: Any) -> None:
    """Until the server answers a STUN Binding and the peer echoes (instead of a fixed
    sleep: a loaded machine may take longer to start them)."""
    from visavis.protocol.stun import MessageClass, Method, encode_message

    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        for _ in range(20):
            tid = os.urandom(12)
            request = encode_message(Method.BINDING, MessageClass.REQUEST, tid, [])
            try:
                await transact(sock, ("127.0.0.1", server_port), request, tid)
                break
            except TimeoutError:
                if proc.poll() is not None:
                    raise RuntimeError("the server exited at start") from None
        else:
            raise TimeoutError("the server never answered STUN")
        for _ in range(600):
            sock.sendto(b"ping", ("127.0.0.1", peer_port))
            try:
                if await asyncio.wait_for(loop.sock_recv(sock, 64), 0.1) == b"ping":
                    return
            except TimeoutError:
                continue
        raise TimeoutError("turnutils_peer never echoed")


async def turn_channel(
    sock: socket.socket, server: tuple[str, int], peer_port: int, channel: int
) -> None:
    """Allocate on ``server`` over ``sock`` with the long-term credentials (the first
    answer's 401 brings the nonce; a 438 a fresh one) and bind ``channel`` to
    127.0.0.1:``peer_port``. Any other error answer raises."""
    from visavis.protocol.stun import (
        ChannelNumber,
        ErrorCodeAttr,
        MessageClass,
        Method,
        Nonce,
        Realm,
        RequestedTransport,
        Username,
        XorPeerAddress,
        encode_message,
        long_term_key,
    )

    key = long_term_key(USER, REALM, PASSWORD)
    nonce, realm = "", REALM
    peer = XorPeerAddress(ip_address("127.0.0.1"), peer_port)
    for method, attrs in (
        (Method.ALLOCATE, [RequestedTransport(17)]),
        (Method.CHANNEL_BIND, [ChannelNumber(channel), peer]),
    ):
        for _ in range(3):
            tid = os.urandom(12)
            if nonce:
                full = [*attrs, Username(USER), Realm(realm), Nonce(nonce)]
                data = encode_message(method, MessageClass.REQUEST, tid, full, key=key)
            else:
                data = encode_message(method, MessageClass.REQUEST, tid, attrs)
            answer = await transact(sock, server, data, tid)
            error = answer.get(ErrorCodeAttr)
            if error is None:
                break
            if error.code not in (401, 438):
                raise RuntimeError(f"TURN {method.name} answered error {error.code}")
            nonce = answer.get(Nonce).value
            realm = answer.get(Realm).value
        else:
            raise RuntimeError(f"TURN {method.name}: could not authenticate")


async def probe(server_port: int, peer_port: int, stop_at: float) -> list[float]:
    """Allocate, bind a channel to the echo peer, ping every 20 ms; return RTTs (ms)."""
    from visavis.protocol.turn import encode_channel_data

    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    server = ("127.0.0.1", server_port)
    rtts: list[float] = []
    try:
        await turn_channel(sock, server, peer_port, 0x4FF0)
        seq = 0
        while time.monotonic() < stop_at:
            seq += 1
            payload = seq.to_bytes(4, "big") + b"p" * 156
            sent = time.perf_counter()
            sock.sendto(encode_channel_data(0x4FF0, payload), server)
            deadline = sent + 0.5
            while True:
                try:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    data = await asyncio.wait_for(loop.sock_recv(sock, 4096), remaining)
                except TimeoutError:
                    break
                if data[4:8] == payload[:4]:
                    rtts.append((time.perf_counter() - sent) * 1000)
                    break
            await asyncio.sleep(max(0.0, 0.02 - (time.perf_counter() - sent)))
    finally:
        sock.close()
    return rtts


@dataclass
class Result:
    server: str
    load: str
    sent: int
    received: int
    lost: int
    seconds: float
    cpu: float
    p50: float
    p99: float

    @property
    def relayed(self) -> int:
        return self.sent + self.received

    @property
    def pps(self) -> float:
        return self.relayed / self.seconds

    @property
    def us_per_packet(self) -> float:
        return self.cpu / max(self.relayed, 1) * 1e6


async def run_one(server_name: str, load: tuple[str, int, int, int], loop_kind: str) -> Result:
    label, clients, messages, interval = load
    port = free_port()
    peer_port = free_port()
    min_port = 20000 + (port % 20) * 1000
    if server_name == "coturn":
        proc = start_coturn(port, min_port)
    else:
        proc = start_visavis(port, min_port, loop_kind)
    peer = start_peer(peer_port)
    try:
        await wait_until_serving(port, peer_port, proc)
        cpu0 = cpu_seconds(proc.pid)
        started = time.monotonic()
        uclient = await asyncio.create_subprocess_exec(
            "turnutils_uclient", "-u", USER, "-w", PASSWORD, "-e", "127.0.0.1",
            "-r", str(peer_port), "-p", str(port), "-m", str(clients), "-n", str(messages),
            "-l", "160", "-z", str(interval), "-c", "-X", "127.0.0.1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        expected = messages * interval / 1000
        probe_task = asyncio.create_task(probe(port, peer_port, started + 2 + expected))
        out_bytes, _ = await asyncio.wait_for(uclient.communicate(), expected * 3 + 60)
        seconds = time.monotonic() - started
        cpu = cpu_seconds(proc.pid) - cpu0
        rtts = await probe_task
        out = out_bytes.decode(errors="replace")
        totals = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$", out, re.M)
        sent, received = (int(x) for x in totals[-1]) if totals else (0, 0)
        lost_m = re.search(r"Total lost packets (\d+)", out)
        rtts.sort()
        return Result(
            server=server_name if server_name == "coturn" else f"visavis ({loop_kind})",
            load=label,
            sent=sent,
            received=received,
            lost=int(lost_m.group(1)) if lost_m else -1,
            seconds=seconds,
            cpu=cpu,
            p50=statistics.median(rtts) if rtts else float("nan"),
            p99=rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))] if rtts else float("nan"),
        )
    finally:
        peer.kill()  # turnutils_peer ignores SIGTERM
        peer.wait()
        stop(proc)


def print_table(results: list[Result]) -> None:
    print(
        f"{'load':<10} {'server':<18} {'relayed':>9} {'pkts/s':>8} {'lost':>6} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'CPU s':>6} {'us/pkt':>7}"
    )
    for r in results:
        print(
            f"{r.load:<10} {r.server:<18} {r.relayed:>9} {r.pps:>8.0f} {r.lost:>6} "
            f"{r.p50:>7.2f} {r.p99:>7.2f} {r.cpu:>6.2f} {r.us_per_packet:>7.2f}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short loads (smoke test)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per load; medians reported")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--load", choices=["50x1000", "heavy"], help="run only this load")
    args = parser.parse_args()
    loads = (
        [("quick", 10, 100, 20)]
        if args.quick
        else [("50x1000", 50, 1000, 20), ("heavy", 100, 2000, 5)]
    )
    if args.load:
        loads = [load for load in loads if load[0] == args.load]
    results: list[Result] = []
    for load in loads:
        per: dict[str, list[Result]] = {"coturn": [], "visavis": []}
        for _ in range(args.repeat):
            for name in ("coturn", "visavis"):
                per[name].append(await run_one(name, load, args.loop))
        for name in ("coturn", "visavis"):
            runs = sorted(per[name], key=lambda r: r.us_per_packet)
            results.append(runs[len(runs) // 2])
    print_table(results)
    from visavis.relay import fastpath

    print(f"visavis fast path: {'native (recvmmsg)' if fastpath.NATIVE else 'pure Python'}")
    print()
    for i in range(0, len(results), 2):
        coturn, ours = results[i], results[i + 1]
        ratio = coturn.us_per_packet / ours.us_per_packet if ours.us_per_packet else float("nan")
        print(
            f"{coturn.load}: packets per CPU-second, visavis / coturn = {ratio:.2f} "
            f"(goal >= 1.0); throughput ratio {ours.pps / max(coturn.pps, 1):.2f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
