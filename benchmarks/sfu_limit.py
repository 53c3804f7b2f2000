"""The physical limit for SFU forwarding on this machine, per core.

    .venv/bin/python benchmarks/sfu_limit.py --runs 5

Builds ``benchmarks/sfu_limit.c`` with ``cc`` (linking Debian's libsrtp2, and the SFU's
own SRTP, ``src/visavis/sfu/_srtp.c``, on OpenSSL's libcrypto) into a temporary
directory and runs it: one thread sends 1,200-byte datagrams with ``sendmmsg`` (batches
of 64) on loopback to a socket a child process drains with ``recvmmsg``, first as they
are ("plain"), then each protected with SRTP AES-128-GCM first (what an SFU must do once
per subscriber): with libsrtp2 ("srtp") and with the SFU's own ("evp"); "srtp-only" and
"evp-only" protect without sending (the cipher alone; "us_per_send" is then per
protect). The sending thread's own CPU clock is measured, so other processes on the
shared machine do not count against it (they do slow the wall clock). Prints the
medians: datagrams per CPU-second of the sender (the ceiling for forwarded packets/s per
core, since every forwarded packet is one such send) and microseconds per datagram; also
the receiver's cost per datagram (an SFU pays it once per *incoming* packet, shared by
its fan-out), and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
SFU_SRC = os.path.join(HERE, "..", "src", "visavis", "sfu")
MODES = ("plain", "srtp", "evp", "srtp-only", "evp-only", "plain-gso", "evp-gso")


def build(directory: str) -> str:
    binary = os.path.join(directory, "sfu_limit")
    sources = [os.path.join(HERE, "sfu_limit.c"), os.path.join(SFU_SRC, "_srtp.c")]
    subprocess.run(
        ["cc", "-O2", "-I", SFU_SRC, "-o", binary, *sources, "-lsrtp2", "-lcrypto"], check=True
    )
    return binary


def measure(binary: str, mode: str, count: int, size: int, segments: int = 8) -> dict[str, Any]:
    out = subprocess.run(
        [binary, mode, str(count), str(size), str(segments)], check=True, capture_output=True
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=400_000)
    parser.add_argument("--size", type=int, default=1200)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument(
        "--segments", type=int, default=8, help="datagrams per UDP_SEGMENT send (the -gso modes)"
    )
    args = parser.parse_args()
    summary: dict[str, Any] = {
        "size": args.size,
        "runs": args.runs,
        "segments": args.segments,
        "loadavg_before": _load(),
    }
    with tempfile.TemporaryDirectory(prefix="vv-limit-") as tmp:
        binary = build(tmp)
        for mode in args.modes:
            runs = [
                measure(binary, mode, args.count, args.size, args.segments)
                for _ in range(args.runs)
            ]
            per_core = [r["sent"] / r["sender_cpu_s"] for r in runs]
            recv_us = [r["receiver_cpu_s"] / r["received"] * 1e6 for r in runs if r["received"] > 0]
            summary[mode] = {
                "sends_per_cpu_second": round(statistics.median(per_core)),
                "us_per_send": round(1e6 / statistics.median(per_core), 3),
                "spread_per_cpu_second": [round(min(per_core)), round(max(per_core))],
                "receiver_us_per_datagram": round(statistics.median(recv_us), 3)
                if recv_us
                else None,
                "delivered_share": round(
                    statistics.median(r["received"] / r["sent"] for r in runs), 3
                ),
            }
    summary["loadavg_after"] = _load()
    print(json.dumps(summary, indent=1))


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


if __name__ == "__main__":
    main()
