"""The SFU's forwarding path alone: CPU per forwarded packet, native vs pure Python.

    .venv/bin/python benchmarks/sfu_fastpath.py --fanout 31 --runs 5 [--twcc]

One publisher's SRTP packets (pre-protected) are written to the SFU's media socket on
loopback in batches; ``Forwarder.drain`` (the ``add_reader`` callback of the real SFU)
reads them (recvmmsg), decrypts, rewrites each for ``--fanout`` subscribers, encrypts
and sends them (sendmmsg) to a socket a child process drains. Only the drain is timed,
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


def _drainer() -> tuple[socket.socket, int]:
    """A socket on loopback drained by a child process (so sends are real deliveries)."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    rx.bind(("127.0.0.1", 0))
    pid = os.fork()
    if pid == 0:
        buf = bytearray(4096)
        try:
            while True:
                rx.recv_into(buf)
        finally:
            os._exit(0)
    return rx, pid


def measure(
    fp: Any, fanout: int, size: int, packets: int, video: bool, twcc: bool = False
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
    sink_sock, child = _drainer()
    try:
        links: dict[Any, Any] = {}
        stats = SfuStats()
        forwarder = fp.Forwarder(sfu, links, stats, lambda *a: None)
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
            out.set_destination(*sink_sock.getsockname())
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
        for start in range(0, packets, BATCH):
            for d in data[start : start + BATCH]:
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
        for s in (sfu, pub, sink_sock):
            s.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fanout", type=int, default=31)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--packets", type=int, default=2048)
    parser.add_argument("--twcc", action="store_true", help="subscribers negotiated TWCC")
    args = parser.parse_args()
    impls: list[tuple[str, Any]] = [("python", _fastpath_py)]
    try:
        from visavis.sfu import _fastpath as native

        impls.insert(0, ("native", native))
    except ImportError:
        print("native fast path not built", file=sys.stderr)
    results: dict[str, Any] = {"fanout": args.fanout, "runs": args.runs, "twcc": args.twcc}
    for name, fp in impls:
        for label, size, video in (("video 1200 B", 1200, True), ("audio 100 B", 100, False)):
            packets = args.packets if name == "native" else args.packets // 4
            runs = [
                measure(fp, args.fanout, size, packets, video, args.twcc) for _ in range(args.runs)
            ]
            med = statistics.median(runs)
            results[f"{name}, {label}"] = {
                "us_per_forwarded_packet": round(med * 1e6, 3),
                "forwarded_per_cpu_second": round(1 / med),
                "spread_us": [round(min(runs) * 1e6, 3), round(max(runs) * 1e6, 3)],
            }
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
