"""1:1 call setup time and media latency through real NATs (the netlab of tests/netlab).

Run as root: ``.venv/bin/python benchmarks/call_setup.py`` (``--quick``: 3 calls a row).

For each path it places N calls one after another between two SDK devices in lab
namespaces, each sending the stamped 320x240 test pattern (tests/netlab/peer.py):

- setup time, from just before ``call.invite`` on the caller to the first decoded video
  frame, on the callee and on the caller (p50 / p99 over the calls);
- end-to-end media latency: every frame carries its capture time (client/media.py); the
  receiver subtracts it from the time it decoded the frame (same kernel clock in every
  namespace), pooled over both directions and every call, against the seed's budget
  of < 150 ms glass to glass;
- the path the call took (host, srflx, relay over udp/tcp), checked against the expected.

Rows: host (two clients on one LAN), srflx (two cone NATs), relay (two symmetric NATs),
relay over TCP (two UDP-blocked LANs), then the srflx and relay rows again with
``tc netem`` (delay, jitter, loss, rate) on every NAT router's WAN and LAN egress. The
benchmark first tries a netem qdisc in the lab and prints whether it works and why not;
on a kernel without sch_netem it falls back to iptables random loss and a tbf rate limit,
without delay or jitter, and says so (docs/netlab.md, "netem").

``--rows host,srflx`` runs only those rows; ``--aiortc-jitter-buffer`` keeps aiortc's
video jitter buffer (frames wait for the next frame: the "before" latency figures).

Everything runs in network namespaces created here and deleted at the end; every process
is stopped by PID.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.netlab.lab import Lab  # noqa: E402
from tests.netlab.runner import NatLab, build  # noqa: E402

from visavis.client.latency import STAGES  # noqa: E402
from visavis.client.stats import Path as IcePath  # noqa: E402
from visavis.client.stats import combined_kind  # noqa: E402

BUDGET_MS = 150
ROWS = [
    ("host", "cone1", "cone1", "host"),
    ("srflx", "cone1", "cone2", "srflx"),
    ("relay/udp", "sym1", "sym2", "relay"),
    ("relay/tcp", "udpblock1", "udpblock2", "relay"),
]
NETEM_ROWS = [("srflx+netem", "cone1", "cone2", "srflx"), ("relay+netem", "sym1", "sym2", "relay")]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def run_row(natlab: NatLab, name: str, a_lan: str, b_lan: str, expected: str, calls: int,
            seconds: float, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    caller, callee = natlab.clients(a_lan)[0], natlab.clients(b_lan)[-1]
    a, b = natlab.run_pair(
        caller, callee, calls=calls, within=60 + calls * (seconds + 15),
        extra=("--size", "320x240", "--seconds", str(seconds), "--frames", "1", *extra),
    )
    by_id = {r["call_id"]: r for r in b.records}
    callee_ms, caller_ms, connect_ms, latencies, kinds = [], [], [], [], []
    stages: dict[str, list[float]] = {s: [] for s in STAGES}
    for record in a.records:
        other = by_id.get(record["call_id"])
        if other is None:
            continue
        start = record["invited_at"]
        caller_ms.append(1000 * (record["first_frame_at"] - start))
        callee_ms.append(1000 * (other["first_frame_at"] - start))
        connect_ms.append(1000 * (record["connected_at"] - start))
        latencies += record["latencies_ms"] + other["latencies_ms"]
        for side in (record, other):
            for stage, value in (side.get("stages") or {}).items():
                stages.setdefault(stage, []).append(value)
        kinds.append(combined_kind(IcePath(**record["path"]), IcePath(**other["path"])))
    return {
        "row": name,
        "calls": f"{len(caller_ms)}/{calls}",
        "errors": a.errors + b.errors,
        "path_ok": bool(kinds) and all(k == expected for k in kinds),
        "paths": sorted({str(k) for k in kinds}),
        "connect_p50": pct(connect_ms, 0.5),
        "callee_p50": pct(callee_ms, 0.5),
        "callee_p99": pct(callee_ms, 0.99),
        "caller_p50": pct(caller_ms, 0.5),
        "caller_p99": pct(caller_ms, 0.99),
        "lat_p50": pct(latencies, 0.5),
        "lat_p99": pct(latencies, 0.99),
        "lat_n": len(latencies),
        "stages": {k: statistics.median(v) for k, v in stages.items() if v},
        "rtt": statistics.median([r["rtt_ms"] for r in a.records if r.get("rtt_ms")] or [0.0]),
        "loss": statistics.mean([r["loss"] for r in a.records + b.records] or [0.0]),
    }


def show(rows: list[dict[str, Any]]) -> None:
    header = (f"{'path':<13} {'calls':>6} {'ok':>3} {'ICE+DTLS':>9} {'1st frame callee':>17} "
              f"{'1st frame caller':>17} {'latency p50/p99':>16} {'<150ms':>7} {'rtt':>6} "
              f"{'loss':>6}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['row']:<13} {r['calls']:>6} {'yes' if r['path_ok'] else 'NO':>3} "
            f"{r['connect_p50']:>7.0f}ms "
            f"{r['callee_p50']:>7.0f}/{r['callee_p99']:<6.0f}ms "
            f"{r['caller_p50']:>7.0f}/{r['caller_p99']:<6.0f}ms "
            f"{r['lat_p50']:>7.0f}/{r['lat_p99']:<5.0f}ms "
            f"{'yes' if r['lat_p99'] < BUDGET_MS else 'no':>7} "
            f"{r['rtt']:>4.0f}ms {100 * r['loss']:>5.1f}%"
        )
        for error in r["errors"]:
            print(f"    error: {error}")
    print("(setup times are from just before call.invite; p50/p99 over the calls; latency is "
          "capture-to-decode of stamped frames, both directions; rtt from RTCP)")
    print("\nwhere the latency goes (ms; per call and side the median of each stage, then the "
          "median of those):")
    print(f"{'path':<13} " + " ".join(f"{s:>15}" for s in STAGES))
    for r in rows:
        print(f"{r['row']:<13} " + " ".join(
            f"{r['stages'][s]:>15.1f}" if s in r["stages"] else f"{'-':>15}" for s in STAGES))
    print("(queue: capture to the sender pulling the frame; encode: the encoder call; "
          "to_first_packet: capture to the first RTP packet at the receiver; transfer: first "
          "to last packet; jitter_wait: last packet to the jitter buffer releasing the frame; "
          "decode: release to the decoded frame in our hands; see visavis/client/latency.py)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=2.0, help="media per call")
    parser.add_argument("--quick", action="store_true", help="3 calls per row")
    parser.add_argument("--delay", type=int, default=40, help="netem delay per router (ms)")
    parser.add_argument("--jitter", type=int, default=10, help="netem jitter (ms)")
    parser.add_argument("--loss", type=float, default=0.02, help="loss per router (0.02 = 2%%)")
    parser.add_argument("--rate", default="2mbit", help="rate limit per router link")
    parser.add_argument("--no-netem", action="store_true", help="skip the bad-network rows")
    parser.add_argument("--aiortc-jitter-buffer", action="store_true",
                        help="keep aiortc's video jitter buffer (the before figures)")
    parser.add_argument("--rows", default="", help="comma-separated row names to run")
    args = parser.parse_args()
    calls = 3 if args.quick else args.calls
    extra = ("--aiortc-jitter-buffer",) if args.aiortc_jitter_buffer else ()
    wanted = {r for r in args.rows.split(",") if r}
    with tempfile.TemporaryDirectory(prefix="visavis-bench-") as tmp, Lab() as lab:
        natlab = build(lab, Path(tmp))
        rows = [run_row(natlab, *row, calls, args.seconds, extra) for row in ROWS
                if not wanted or row[0] in wanted]
        buffer = "aiortc's" if args.aiortc_jitter_buffer else "marker-bit"
        print(f"\n== clean network, {calls} calls per row, 320x240 test pattern at 15 fps, "
              f"{buffer} video jitter buffer")
        show(rows)
        if not args.no_netem:
            netem, why = lab.netem_check()
            print(f"\nnetem: {'available' if netem else 'UNAVAILABLE: ' + why}")
            if not netem:
                print("  fallback: iptables 'statistic' random loss in each router's FORWARD "
                      "chain and a tbf rate limit on its WAN and LAN; no added delay or "
                      "jitter (latency and setup figures below are for loss + rate only)")
            applied = ""
            for lan in ("cone1", "cone2", "sym1", "sym2"):
                applied = lab.impair(lan, delay_ms=args.delay, jitter_ms=args.jitter,
                                     loss=args.loss, rate=args.rate)
            bad = [run_row(natlab, *row, calls, args.seconds, extra) for row in NETEM_ROWS
                   if not wanted or row[0] in wanted]
            print(f"\n== bad network on each NAT router: {applied}")
            show(bad)


if __name__ == "__main__":
    main()
