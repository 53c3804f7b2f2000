"""What a cascade hop costs: CPU per delivered packet and latency, one node vs two.

    .venv/bin/python benchmarks/cascade_cost.py --rate 4000 --seconds 4 --runs 5

The real forwarding code on real loopback sockets, in this process: each SFU node is a
:class:`~visavis.sfu.udp.MediaEndpoint` (the native fast path when built) with a
:class:`~visavis.sfu.room.Room`. A child process publishes one SRTP stream (1,000-byte
payloads carrying their send time) at ``--rate`` packets/s and receives what the SFU
forwards to its one subscriber:

* ``direct``: publisher -> node A -> subscriber (the room on one node);
* ``cascade``: publisher -> node A -> link -> node B -> subscriber, the link made by the
  shipped :class:`~visavis.sfu.cascade.Bridge` code (control messages handed over in
  memory, media over SRTP on UDP).

Both nodes run on this process's one loop, so the CPU figure (this process's CPU time
over the packets delivered) is the sum of both nodes' work, and the latency (send to
receive, CLOCK_MONOTONIC across the two processes) includes the second node's decrypt,
rewrite, encrypt and the extra UDP hop. Prints the medians over ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import select
import socket
import statistics
import struct
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
from visavis.sfu import fastpath
from visavis.sfu.cascade import Bridge, Cascade, CascadeTransport, PeerLink
from visavis.sfu.dtls import DtlsIdentity
from visavis.sfu.room import Consumer, Participant, Producer, Room
from visavis.sfu.settings import SfuSettings
from visavis.sfu.stats import SfuStats
from visavis.sfu.udp import MediaEndpoint

PROFILE = fastpath.PROFILE_AES128_CM_SHA1_80
SSRC = 0x1234
PAYLOAD = 1000


def client(
    sfu: tuple[str, int], pub_key: bytes, sub_key: bytes, rate: int, seconds: float, conn: Any
) -> None:
    """The publisher and the subscriber: send at ``rate``, report latencies (ms)."""
    pub = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sub = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sub.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    pub.bind(("127.0.0.1", 0))
    sub.bind(("127.0.0.1", 0))
    sub.setblocking(False)
    conn.send((pub.getsockname(), sub.getsockname()))
    conn.recv()  # the SFU is ready
    tx = fastpath.Session(pub_key, PROFILE, True)
    rx = fastpath.Session(sub_key, PROFILE, False)
    latencies: list[float] = []
    start = time.monotonic()
    sent = 0
    end = start + seconds
    while True:
        now = time.monotonic()
        if now >= end + 0.5:
            break
        due = int((now - start) * rate) if now < end else sent
        while sent < due:
            header = struct.pack("!BBHII", 0x80, 111, sent & 0xFFFF, sent * 20, SSRC)
            body = struct.pack("!d", time.monotonic()).ljust(PAYLOAD, b"\0")
            pub.sendto(tx.protect(header + body), sfu)
            sent += 1
        # Wait for what the SFU forwards until the next packet is due (no polling delay
        # in the receive time).
        wait = max(0.0, start + (sent + 1) / rate - time.monotonic()) if now < end else 0.05
        ready, _, _ = select.select([sub], [], [], wait)
        while ready:
            try:
                data = sub.recv(4096)
            except BlockingIOError:
                break
            received = time.monotonic()
            plain = rx.unprotect(data)
            offset = 12 + 4 * (plain[0] & 0x0F)
            if plain[0] & 0x10:
                offset += 4 + 4 * struct.unpack_from("!H", plain, offset + 2)[0]
            latencies.append(1000 * (received - struct.unpack_from("!d", plain, offset)[0]))
    conn.send((sent, latencies))


class _Node:
    def __init__(self, name: str, identity: DtlsIdentity) -> None:
        self.stats = SfuStats()
        self.endpoint = MediaEndpoint(self.stats)
        self.port = self.endpoint.open("127.0.0.1", 0)
        self.room = Room("r", SfuSettings(), self.stats, lambda t: None, self.endpoint.forwarder)  # type: ignore[arg-type,return-value]
        self.cascade = Cascade(
            node_id=name,
            secret="bench",
            identity=identity,
            stats=self.stats,
            endpoint=self.endpoint,
            rooms=lambda: {"r": self.room},
            lookup=_nobody,
            refused=lambda reason: None,
        )


async def _nobody(node: str) -> None:
    return None


class _Ends:
    """A transport to a client socket with fixed SRTP keys (stands in for ICE + DTLS)."""

    def on_transport_connected(self, now: float) -> None: ...
    def on_rtp(self, data: bytes, now: float) -> None: ...
    def on_rtcp(self, data: bytes, now: float) -> None: ...


def _endpoint_transport(
    node: _Node, identity: DtlsIdentity, addr: tuple[str, int], rx: bytes, tx: bytes
) -> CascadeTransport:
    transport = CascadeTransport(
        identity,
        node.stats,
        node.endpoint.sendto,
        _Ends(),  # type: ignore[arg-type]
        address=addr,
        rx_key=rx,
        tx_key=tx,
        now=time.monotonic(),
    )
    node.endpoint.bind(transport, addr)
    return transport


def _participant(room: Room, name: str, transport: CascadeTransport) -> Participant:
    participant = Participant(
        room, name, name, "d", lambda _: transport, lambda _: None, time.monotonic()
    )
    room.participants[name] = participant
    return participant


async def run_once(mode: str, rate: int, seconds: float) -> dict[str, float]:
    identity = DtlsIdentity()
    a, b = _Node("A", identity), _Node("B", identity)
    pub_key, sub_key = secrets.token_bytes(30), secrets.token_bytes(30)
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.Process(
        target=client, args=(("127.0.0.1", a.port), pub_key, sub_key, rate, seconds, child)
    )
    proc.start()
    pub_addr, sub_addr = parent.recv()
    publisher = _participant(
        a.room, "pub", _endpoint_transport(a, identity, pub_addr, pub_key, os.urandom(30))
    )
    producer = Producer(publisher, "a0", "audio", 48000, 111, None, [], SSRC, None, None)
    publisher.producers["a0"] = producer
    publisher._bind_ssrc(SSRC, producer, producer.layers[0], False)
    last = a
    if mode == "cascade":
        k1, k2 = secrets.token_bytes(30), secrets.token_bytes(30)
        ab = PeerLink(a.cascade, "B", "A", None, _link_args(a, identity, b.port, k2, k1))
        ba = PeerLink(b.cascade, "A", "A", None, _link_args(b, identity, a.port, k1, k2))
        a.endpoint.bind(ab.transport, ("127.0.0.1", b.port))
        b.endpoint.bind(ba.transport, ("127.0.0.1", a.port))
        on_a, on_b = Bridge(ab, a.room), Bridge(ba, b.room)
        on_a.joined(publisher)
        on_a.published(producer, time.monotonic())
        while not ab.outbox.empty():  # the control messages, handed over in memory
            message = json.loads(ab.outbox.get_nowait() or "{}")
            if message["t"] == "joined":
                on_b.on_joined(message["p"], time.monotonic())
            elif message["t"] == "producer":
                on_b.on_producer(message, time.monotonic())
        producer = b.room.participants["pub"].producers["a0"]
        last = b
    subscriber = _participant(
        last.room, "sub", _endpoint_transport(last, identity, sub_addr, os.urandom(30), sub_key)
    )
    consumer = Consumer(subscriber, producer, "s0", 111, None, {})
    producer.consumers.append(consumer)
    cpu = time.process_time()
    parent.send("go")
    await asyncio.to_thread(parent.poll, None)  # the loop forwards meanwhile
    cpu = time.process_time() - cpu
    sent, latencies = parent.recv()
    proc.join()
    for node in (a, b):
        node.endpoint.close()
    latencies.sort()
    got = max(1, len(latencies))
    return {
        "sent": sent,
        "delivered": len(latencies),
        "cpu_us": 1e6 * cpu / got,
        "p50_ms": latencies[got // 2] if latencies else float("nan"),
        "p99_ms": latencies[min(got - 1, int(0.99 * got))] if latencies else float("nan"),
    }


def _link_args(
    node: _Node, identity: DtlsIdentity, port: int, rx: bytes, tx: bytes
) -> dict[str, Any]:
    return {
        "identity": identity,
        "stats": node.stats,
        "sendto": node.endpoint.sendto,
        "address": ("127.0.0.1", port),
        "rx_key": rx,
        "tx_key": tx,
        "now": time.monotonic(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=4000, help="packets/s published")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"native fast path: {fastpath.NATIVE}; load average {os.getloadavg()[0]:.2f}")
    results: dict[str, list[dict[str, float]]] = {"direct": [], "cascade": []}
    for _ in range(args.runs):
        for mode in results:
            results[mode].append(asyncio.run(run_once(mode, args.rate, args.seconds)))
    medians = {}
    for mode, rows in results.items():
        medians[mode] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        m = medians[mode]
        print(
            f"{mode:8s} delivered {m['delivered']:.0f}/{m['sent']:.0f}  "
            f"CPU {m['cpu_us']:.1f} µs per delivered packet  "
            f"latency p50 {m['p50_ms']:.3f} ms p99 {m['p99_ms']:.3f} ms"
        )
    d, c = medians["direct"], medians["cascade"]
    print(
        f"one cascade hop adds {c['cpu_us'] - d['cpu_us']:.1f} µs CPU per packet "
        f"({c['cpu_us'] / d['cpu_us']:.2f}x) and {c['p50_ms'] - d['p50_ms']:.3f} ms p50 / "
        f"{c['p99_ms'] - d['p99_ms']:.3f} ms p99 latency; load average "
        f"{os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
