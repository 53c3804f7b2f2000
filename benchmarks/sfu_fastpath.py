"""The SFU's forwarding path alone: CPU per forwarded packet, native vs pure Python.

    .venv/bin/python benchmarks/sfu_fastpath.py --fanout 31 --runs 5 [--twcc] [--burst 8]

One publisher's SRTP packets (pre-protected) are written to the SFU's media socket on
loopback in bursts of ``--burst`` (64: a loaded SFU's drain; 8: one 1080p frame);
``Forwarder.drain`` (the ``add_reader`` callback of the real SFU) reads them (recvmmsg),
decrypts, rewrites each for ``--fanout`` subscribers, encrypts and sends them (sendmmsg;
natively a subscriber's run of equal-sized datagrams as one UDP_SEGMENT send, "native"
and "native-nogso" compare it) to the subscribers' own sockets, which a child process
drains. Only the drain is timed,
with the thread's own CPU clock, so the other processes of a shared machine do not
count against it. Prints, per implementation and packet size, the median µs per
forwarded packet (decryption and the receive amortised over the fan-out, encryption and
the send included) and forwarded packets per CPU-second: compare with
``benchmarks/sfu_limit.py`` (a bare ``sendmmsg``, with and without SRTP). ``--twcc``:
every subscriber negotiated transport-wide CC (each packet stamped and its send
recorded).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import socket
import statistics
import struct
import sys
import time
from typing import Any

import pylibsrtp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
from visavis.sfu import _fastpath_py
from visavis.sfu.stats import SfuStats

GCM = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM
BATCH = 64


def _drainer(count: int) -> tuple[list[socket.socket], int]:
    """``count`` sockets on loopback (one per subscriber) drained by a child process, so
    sends are real deliveries to distinct destinations."""
    socks = []
    for _ in range(count):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        socks.append(rx)
    pid = os.fork()
    if pid == 0:
        buf = bytearray(65536)
        try:
            while True:
                for ready in select.select(socks, [], [])[0]:
                    with contextlib.suppress(BlockingIOError):
                        while True:
                            ready.recv_into(buf)
        finally:
            os._exit(0)
    return socks, pid


def measure(
    fp: Any,
    fanout: int,
    size: int,
    packets: int,
    video: bool,
    twcc: bool = False,
    burst: int = BATCH,
    gso: bool = True,
) -> float:
    """Thread CPU seconds per forwarded packet."""
    key = bytes(range(28))
    sfu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sfu.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sfu.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    sfu.bind(("127.0.0.1", 0))
    sfu.setblocking(False)
    pub = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pub.bind(("127.0.0.1", 0))
    sink_socks, child = _drainer(fanout)
    try:
        links: dict[Any, Any] = {}
        stats = SfuStats()
        forwarder = fp.Forwarder(sfu, links, stats, lambda *a: None)
        forwarder.gso = int(gso and forwarder.gso)
        link = fp.Link("pub")
        link.rx = fp.Session(key, GCM, False)
        links[fp.link_key(*pub.getsockname())] = link
        sinks: list[Any] = []
        source = fp.Source(
            0, video, -1 if video else 1, [None] * 1024 if video else None, sinks, None
        )
        link.sources[1234] = source
        for i in range(fanout):
            out = fp.Link(f"sub{i}")
            out.tx = fp.Session(bytes((i + 1,)) * 28, GCM, True)
            out.set_destination(*sink_socks[i].getsockname())
            if twcc:
                out.twcc_id = 5
            rewriter = fp.Rewriter(90000 if video else 48000, initial_seq=i, initial_ts=i)
            selector = fp.Selector(target=0)
            if not video:
                rewriter.switch(0)
            sinks.append(
                fp.Sink(
                    out, 5000 + i, 96, 3 if video else -1, -1 if video else 1, rewriter, selector
                )
            )
        tx = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=GCM
            )
        )
        ext = b"\xbe\xde\x00\x01\x40q\x00\x00" if video else b"\xbe\xde\x00\x01\x10\x85\x00\x00"
        head = bytes((0x10, 0x10, 0x9D, 0x01, 0x2A)) if video else b""
        body = head + bytes(size - 20 - len(head))
        data = [
            tx.protect(struct.pack("!BBHII", 0x90, 96, s & 0xFFFF, s * 3000, 1234) + ext + body)
            for s in range(packets)
        ]
        cpu = 0.0
        dest = sfu.getsockname()
        for start in range(0, packets, burst):
            for d in data[start : start + burst]:
                pub.sendto(d, dest)
            select.select([sfu], [], [], 1)
            t0 = time.thread_time()
            forwarder.drain(1000.0 + start / 1000)
            cpu += time.thread_time() - t0
        forwarded = stats.packets_forwarded
        assert forwarded >= 0.95 * packets * fanout, (forwarded, packets * fanout, stats.dropped)
        return cpu / forwarded
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)
        for s in (sfu, pub, *sink_socks):
            s.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fanout", type=int, default=31)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--packets", type=int, default=2048)
    parser.add_argument("--twcc", action="store_true", help="subscribers negotiated TWCC")
    parser.add_argument("--burst", type=int, default=BATCH, help="datagrams per drain")
    parser.add_argument("--python", action="store_true", help="also the pure-Python twin")
    args = parser.parse_args()
    impls: list[tuple[str, Any, bool]] = []
    try:
        from visavis.sfu import _fastpath as native

        impls += [("native", native, True), ("native-nogso", native, False)]
    except ImportError:
        print("native fast path not built", file=sys.stderr)
    if args.python or not impls:
        impls.append(("python", _fastpath_py, False))
    results: dict[str, Any] = {
        "fanout": args.fanout,
        "runs": args.runs,
        "twcc": args.twcc,
        "burst": args.burst,
    }
    for label, size, video in (("video 1200 B", 1200, True), ("audio 100 B", 100, False)):
        runs: dict[str, list[float]] = {name: [] for name, _, _ in impls}
        for _ in range(args.runs):  # alternated, so that a busy minute hits all alike
            for name, fp, gso in impls:
                packets = args.packets if fp is not _fastpath_py else args.packets // 4
                runs[name].append(
                    measure(fp, args.fanout, size, packets, video, args.twcc, args.burst, gso)
                )
        for name, values in runs.items():
            med = statistics.median(values)
            results[f"{name}, {label}"] = {
                "us_per_forwarded_packet": round(med * 1e6, 3),
                "forwarded_per_cpu_second": round(1 / med),
                "spread_us": [round(min(values) * 1e6, 3), round(max(values) * 1e6, 3)],
            }
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
