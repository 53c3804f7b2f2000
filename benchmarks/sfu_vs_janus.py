"""visavis SFU vs Janus videoroom: the same synthetic load, the same run.

    .venv/bin/python benchmarks/sfu_vs_janus.py --sizes 4 8 32 --runs 3
    .venv/bin/python benchmarks/sfu_vs_janus.py --profile realistic --sizes 4 8 16 32 --runs 3
    (add --neighbour for a CPU-bound process beside each server)

For each room size and run, feeds the visavis SFU (``sfu_load.run``) and then Janus
1.1's videoroom plugin (``/usr/bin/janus``, Debian package ``janus``; the order alternates
between runs) the same synthetic participants from ``sfu_load``: real ICE check, DTLS,
SRTP, no codecs; each publishes Opus-sized audio (50 packets/s) and three rid-based
simulcast layers (10/20/40 packets/s of 250/600/1000 B, a VP8 keyframe header each
second) and receives every other participant. Measured over the same window for each
server: its process's CPU seconds (/proc/<pid>/stat, user+system, all threads), the RTP
packets that reach the subscribers' sockets, and forwarding latency p50/p99 (send time at
the end of the payload). Prints one table with the medians and the ratio of CPU per
forwarded packet (visavis / Janus).

Janus runs from a configuration generated in a temporary directory, ICE-lite, inside a
network namespace created here: Janus never gathers the loopback interface (it skips
IFF_LOOPBACK interfaces; ``ice_enforce_list = "lo"`` and ``nat_1_1_mapping`` do not help,
libnice binds its sockets to the gathered address), so the namespace gets a veth pair
with 10.213.0.1 for Janus to gather, and the load generator opens its Janus-facing
sockets (UDP media, TCP for the HTTP API) inside that namespace (``setns`` on this
thread only). Packets to a local address travel over the namespace's own loopback:
nothing is sent to the machine's network, and the root namespace is not changed.

Same load: Janus gets one publisher PeerConnection and one multistream subscriber
PeerConnection per participant (the Janus way) where visavis gets one of each; the
subscriber picks the simulcast layer visavis's allocator would choose (the highest for
everyone when a subscriber has at most ``last_n`` = 4 others, else the highest for the
loud participant 0 only and the lowest for the rest), so that both forward the same
packets; the table shows the received rates to check it. Needs root (network namespace).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import http.client
import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pylibsrtp

sys.path.insert(0, os.path.dirname(__file__))
from sfu_load import (
    Synthetic,
    _offer,
    add_profile_options,
    connect_media,
    neighbour,
    profile_of,
    pump,
    pump_c,
    visible_for,
)
from sfu_load import run as run_visavis

from visavis.sfu.dtls import DtlsIdentity

JANUS = "/usr/bin/janus"
JANUS_LIB = "/usr/lib/x86_64-linux-gnu/janus"
JANUS_IP = "10.213.0.1"  # only inside the namespace created here
HTTP_PORT = 8088  # inside the namespace
LAST_N = 4  # visavis's default sfu.last_n, mirrored in Janus's substream choice
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the block with this thread in network namespace ``name``: sockets created in
    it stay there."""
    with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{name}") as target:
        if _libc.setns(target.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns into " + name)
        try:
            yield
        finally:
            if _libc.setns(home.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")


class _NsHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 keep-alive connection whose socket is opened inside the namespace."""

    def __init__(self, netns: str) -> None:
        super().__init__("127.0.0.1", HTTP_PORT, timeout=40)
        self.netns = netns

    def connect(self) -> None:
        with in_netns(self.netns):
            self.sock = socket.create_connection((self.host, self.port), self.timeout)


class JanusApi:
    """The Janus API over the HTTP transport: one session, events by long polling."""

    def __init__(self, netns: str) -> None:
        self.conn = _NsHTTPConnection(netns)
        self.session = 0
        self.backlog: list[dict[str, Any]] = []

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        self.conn.request(method, "/janus" + path, body=data, headers=headers)
        response = self.conn.getresponse()
        return json.loads(response.read())

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": secrets.token_hex(8)}
        reply = self._call("POST", path, body)
        if reply.get("janus") == "error":
            raise RuntimeError(f"Janus error: {reply['error']}")
        reply["transaction"] = body["transaction"]
        return reply  # type: ignore[no-any-return]

    def create_session(self) -> None:
        self.session = self.post("", {"janus": "create"})["data"]["id"]

    def attach(self) -> int:
        reply = self.post(
            f"/{self.session}", {"janus": "attach", "plugin": "janus.plugin.videoroom"}
        )
        return int(reply["data"]["id"])

    def message(
        self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Send a plugin request; returns the synchronous result or the async event."""
        request: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            request["jsep"] = jsep
        reply = self.post(f"/{self.session}/{handle}", request)
        if reply["janus"] == "ack":
            reply = self.wait(reply["transaction"])
        data = reply.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise RuntimeError(f"videoroom error: {data['error']} for {body}")
        return reply

    def trickle_done(self, handle: int) -> None:
        self.post(
            f"/{self.session}/{handle}", {"janus": "trickle", "candidate": {"completed": True}}
        )

    def wait(self, transaction: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.backlog:
                if event.get("transaction") == transaction and event["janus"] == "event":
                    self.backlog.remove(event)
                    return event
            events = self._call("GET", f"/{self.session}?maxev=50")
            events = events if isinstance(events, list) else [events]
            self.backlog += [e for e in events if e.get("janus") == "event"]
            del self.backlog[:-500]  # bounded: publisher notifications nobody reads
        raise TimeoutError(f"no Janus event for transaction {transaction}")


@dataclass
class JanusLab:
    """A Janus process in its own network namespace, from a generated configuration."""

    event_loops: int = 0
    netns: str = field(default_factory=lambda: f"vvjanus-{os.getpid()}-{secrets.token_hex(2)}")
    tmp: str = ""
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="vv-janus-")
        self._write_config()
        ip = ["ip", "-n", self.netns]
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        for cmd in (
            ["link", "set", "lo", "up"],
            ["link", "add", "vvj0", "type", "veth", "peer", "name", "vvj1"],
            ["addr", "add", f"{JANUS_IP}/32", "dev", "vvj0"],
            ["link", "set", "vvj1", "up"],
            ["link", "set", "vvj0", "up"],
        ):
            subprocess.run(ip + cmd, check=True)
        command = ["ip", "netns", "exec", self.netns, JANUS, "-C", self._path("janus.jcfg")]
        with open(self._path("janus.log"), "wb") as log:
            self.proc = subprocess.Popen(
                [*command, "-F", self.tmp, "-o"], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("janus exited:\n" + self.log_tail())
            if "HTTP webserver started" in self.log_tail(4000):
                with open(f"/proc/{self.proc.pid}/comm") as f:
                    assert f.read().strip() == "janus", "ip netns exec did not exec janus"
                return
            time.sleep(0.1)
        raise TimeoutError("janus did not start:\n" + self.log_tail())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        subprocess.run(["ip", "netns", "del", self.netns], check=False)
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def log_tail(self, size: int = 2000) -> str:
        with open(self._path("janus.log"), "rb") as f:
            return f.read()[-size:].decode(errors="replace")

    def _path(self, name: str) -> str:
        return os.path.join(self.tmp, name)

    def _write_config(self) -> None:
        plugins = [f for f in os.listdir(f"{JANUS_LIB}/plugins") if f.endswith(".so")]
        transports = [f for f in os.listdir(f"{JANUS_LIB}/transports") if f.endswith(".so")]
        loggers = [f for f in os.listdir(f"{JANUS_LIB}/loggers") if f.endswith(".so")]
        general = [
            f'configs_folder = "{self.tmp}"',
            f'plugins_folder = "{JANUS_LIB}/plugins"',
            f'transports_folder = "{JANUS_LIB}/transports"',
            f'events_folder = "{JANUS_LIB}/events"',
            f'loggers_folder = "{JANUS_LIB}/loggers"',
            "debug_level = 4",
            "session_timeout = 0",
        ]
        if self.event_loops:
            general.append(f"event_loops = {self.event_loops}")
        files = {
            "janus.jcfg": {
                "general": general,
                "media": [],
                "nat": [
                    "nice_debug = false",
                    "ice_lite = true",
                    "ignore_mdns = true",
                    'ice_enforce_list = "vvj0"',
                ],
                "plugins": [
                    'disable = "' + ",".join(p for p in plugins if "videoroom" not in p) + '"'
                ],
                "transports": [
                    'disable = "' + ",".join(t for t in transports if "http" not in t) + '"'
                ],
                "loggers": ['disable = "' + ",".join(loggers) + '"'],
                "events": ["broadcast = false"],
            },
            "janus.transport.http.jcfg": {
                "general": [
                    'json = "compact"',
                    'base_path = "/janus"',
                    "http = true",
                    f"port = {HTTP_PORT}",
                    'ip = "127.0.0.1"',
                    "https = false",
                ],
                "admin": ["admin_http = false"],
            },
            "janus.plugin.videoroom.jcfg": {"general": []},
        }
        for name, sections in files.items():
            with open(self._path(name), "w") as f:
                for section, lines in sections.items():
                    f.write(section + ": {\n" + "".join(f"\t{line}\n" for line in lines) + "}\n")


def subscriber_answer(offer: str, ident: DtlsIdentity, ufrag: str, pwd: str) -> str:
    """Answer Janus's multistream subscriber offer: every m-line recvonly, same codecs,
    NACK feedback and the audio-level extension only (what the visavis SFU's subscribers
    negotiate), DTLS client, BUNDLE."""
    sections = re.split(r"\r\n(?=m=)", offer.strip())
    media = []
    mids = []
    for section in sections[1:]:
        lines = section.split("\r\n")
        mid = next(line[6:] for line in lines if line.startswith("a=mid:"))
        mids.append(mid)
        keep = [
            line
            for line in lines[1:]
            if line.startswith(("a=rtpmap:", "a=fmtp:"))
            or (line.startswith("a=rtcp-fb:") and line.endswith(" nack"))
            or (line.startswith("a=extmap:") and "ssrc-audio-level" in line)
        ]
        media += [
            lines[0],
            "c=IN IP4 0.0.0.0",
            f"a=mid:{mid}",
            "a=recvonly" if "a=sendonly" in lines else "a=inactive",
            f"a=ice-ufrag:{ufrag}",
            f"a=ice-pwd:{pwd}",
            f"a=fingerprint:sha-256 {ident.fingerprint}",
            "a=setup:active",
            "a=rtcp-mux",
            *keep,
        ]
    head = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE " + " ".join(mids)]
    return "\r\n".join(head + media) + "\r\n"


@dataclass
class JanusParticipant:
    """A synthetic participant as Janus wants it: a publisher and a subscriber handle."""

    pub: Synthetic
    sub_sock: socket.socket
    sub_ufrag: str = field(default_factory=lambda: secrets.token_hex(4))
    sub_pwd: str = field(default_factory=lambda: secrets.token_hex(12))
    feed: int = 0
    sub_rx: pylibsrtp.Session | None = None
    sub_keys: dict[str, Any] = field(default_factory=dict)


def high_layer(publisher: int, subscriber: int, n: int, visible: int) -> bool:
    """visavis's allocation in this load: everyone high when a subscriber has at most
    LAST_N others, else the dominant (loud) participant 0 and the tiles the subscriber
    shows."""
    return n - 1 <= LAST_N or publisher == 0 or publisher in visible_for(subscriber, n, visible)


async def run_janus(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement of Janus's videoroom with ``args.participants`` people."""
    n = args.participants
    profile = profile_of(args)
    lab = JanusLab(event_loops=args.janus_event_loops)
    people: list[JanusParticipant] = []
    try:
        lab.start()
        api = JanusApi(lab.netns)
        api.create_session()
        room = 1234
        with in_netns(lab.netns):
            for i in range(n):
                pub = Synthetic(i, "", 0, loud=(i == 0), host=JANUS_IP, profile=profile)
                pub.sock.bind((JANUS_IP, 0))
                sub = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sub.bind((JANUS_IP, 0))
                for s in (pub.sock, sub):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                people.append(JanusParticipant(pub, sub))
        # Publishers: the same offer as for visavis, minus the receive slots.
        for i, p in enumerate(people):
            handle = api.attach()
            if i == 0:
                api.message(
                    handle,
                    {
                        "request": "create",
                        "room": room,
                        "publishers": n + 1,
                        "audiocodec": "opus",
                        "videocodec": "vp8",
                        "notify_joining": False,
                    },
                )
            pub = p.pub
            pub.ssrcs = {k: secrets.randbits(32) for k in ("audio", "q", "h", "f")}
            pub.seq = {k: 0 for k in pub.ssrcs}
            sdp = _offer(
                pub.ident,
                pub.ufrag,
                pub.pwd,
                pub.ssrcs,
                0,
                "active",
                high_first=True,
                layers=profile.layers,
            )
            event = api.message(
                handle,
                {"request": "joinandconfigure", "room": room, "ptype": "publisher"}
                | {"display": f"u{i}", "audio": True, "video": True},
                {"type": "offer", "sdp": sdp},
            )
            api.trickle_done(handle)
            p.feed = event["plugindata"]["data"]["id"]
            pub.remote, pub.tx, pub.rx = connect_media(
                pub.sock, pub.ident, pub.ufrag, event["jsep"]["sdp"], pub.pwd, keys=pub.keys
            )
        # Subscribers: one multistream PeerConnection each, every other publisher.
        for i, p in enumerate(people):
            handle = api.attach()
            streams: list[dict[str, Any]] = []
            for j, other in enumerate(people):
                if j != i:
                    streams.append({"feed": other.feed, "mid": "0"})
                    streams.append(
                        {
                            "feed": other.feed,
                            "mid": "1",
                            "substream": 2 if high_layer(j, i, n, profile.visible) else 0,
                        }
                    )
            event = api.message(
                handle, {"request": "join", "ptype": "subscriber", "room": room, "streams": streams}
            )
            offer = event["jsep"]["sdp"]
            answer = subscriber_answer(offer, p.pub.ident, p.sub_ufrag, p.sub_pwd)
            api.message(handle, {"request": "start"}, {"type": "answer", "sdp": answer})
            api.trickle_done(handle)
            _, _, p.sub_rx = connect_media(
                p.sub_sock, p.pub.ident, p.sub_ufrag, offer, p.sub_pwd, keys=p.sub_keys
            )
        assert lab.proc is not None
        with neighbour(getattr(args, "neighbour", False), getattr(args, "neighbour_core", None)):
            if getattr(args, "generator", "c") == "c":
                window = await pump_c(
                    [p.pub for p in people],
                    [(p.sub_sock, p.sub_keys, p.sub_pwd) for p in people]
                    + [(p.pub.sock, None, p.pub.pwd) for p in people],
                    lab.proc.pid,
                    args.warmup,
                    args.seconds,
                    args.sample,
                    profile=profile,
                )
            else:
                window = await pump(
                    [p.pub for p in people],
                    [(p.sub_sock, p.sub_rx, p.sub_pwd) for p in people]
                    + [(p.pub.sock, None, p.pub.pwd) for p in people],
                    lab.proc.pid,
                    args.warmup,
                    args.seconds,
                    args.sample,
                    profile=profile,
                )
    finally:
        for p in people:
            p.pub.sock.close()
            p.sub_sock.close()
        lab.stop()
    return {"participants": n, "profile": profile.name, **window.summary()}


SHOWN = (
    ("received_rtp_pps", "forwarded pkt/s", "{:,.0f}"),
    ("server_cpu_core_share", "CPU (cores)", "{:.3f}"),
    ("server_cpu_us_per_received_packet", "CPU µs/pkt", "{:.1f}"),
    ("received_pps_per_core", "pkt/s per core", "{:,.0f}"),
    ("latency_ms_p50", "p50 ms", "{:.2f}"),
    ("latency_ms_p99", "p99 ms", "{:.2f}"),
    ("latency_ms_p999", "p99.9 ms", "{:.2f}"),
)


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs if r.get(key) is not None)


def table(results: dict[int, dict[str, list[dict[str, Any]]]]) -> str:
    head = (
        "| people | server | runs | "
        + " | ".join(t for _, t, _ in SHOWN)
        + " | CPU/pkt ratio | pkt per CPU-s vs Janus |"
    )
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for n, by_server in sorted(results.items()):
        medians = {
            s: median_of(r, "server_cpu_us_per_received_packet") for s, r in by_server.items() if r
        }
        both = "visavis" in medians and "janus" in medians
        ratio = f"{medians['visavis'] / medians['janus']:.2f}x" if both else "-"
        speedup = f"{medians['janus'] / medians['visavis']:.2f}x" if both else "-"
        for server, runs in by_server.items():
            if not runs:
                continue
            cells = [fmt.format(median_of(runs, key)) for key, _, fmt in SHOWN]
            rows.append(
                f"| {n} | {server} | {len(runs)} | "
                + " | ".join(cells)
                + (f" | {ratio} | {speedup} |" if server == "visavis" else " | | |")
            )
    return "\n".join(rows)


async def main_async(args: argparse.Namespace) -> None:
    results: dict[int, dict[str, list[dict[str, Any]]]] = {}
    failures: list[str] = []
    for n in args.sizes:
        results[n] = {"visavis": [], "janus": []}
        for rep in range(args.runs):
            order = ["visavis", "janus"] if rep % 2 == 0 else ["janus", "visavis"]
            for server in order:
                if args.only and server != args.only:
                    continue
                one = argparse.Namespace(**{**vars(args), "participants": n})
                try:
                    if server == "visavis":
                        result = await run_visavis(one)
                    else:
                        result = await run_janus(one)
                except Exception as exc:  # report it and go on with the others
                    failures.append(f"{server} n={n} run {rep}: {exc!r}")
                    print(failures[-1], file=sys.stderr)
                    continue
                results[n][server].append(result)
                print(json.dumps({"server": server, "run": rep, **result}), file=sys.stderr)
    if args.json:
        print(json.dumps({"runs": results, "failures": failures}, indent=1))
    print(table(results))
    print(
        "ratio = visavis CPU µs per forwarded packet / Janus's (medians); "
        "forwarded = RTP packets received by the synthetic subscribers"
    )
    for failure in failures:
        print("failed:", failure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 32])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--warmup",
        type=float,
        default=8.0,
        help="seconds of traffic before measuring: at 32 people the SFU learns 32x4 SSRCs "
        "and renegotiates for ~1-3 s after the media starts (docs/sfu.md)",
    )
    parser.add_argument("--sample", type=int, default=20, help="decrypt 1 in N for latency")
    parser.add_argument(
        "--janus-event-loops",
        type=int,
        default=0,
        help="Janus general.event_loops (0: Janus's default, a thread per handle)",
    )
    parser.add_argument("--json", action="store_true", help="also print every run as JSON")
    parser.add_argument(
        "--only", choices=("visavis", "janus"), help="measure one server only (no ratio)"
    )
    add_profile_options(parser)
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="raise this run's priority by N (root; the servers and generators inherit it)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: Janus runs in a network namespace created here")
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, -args.nice)  # inherited by both servers
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
