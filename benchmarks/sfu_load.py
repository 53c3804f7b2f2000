"""SFU load benchmark: synthetic SRTP publishers and subscribers, no codecs.

    .venv/bin/python benchmarks/sfu_load.py --participants 32 --seconds 8 --profile realistic

Starts the SFU in its own process (``python -m visavis.sfu``), joins N synthetic
participants through the real control protocol, ICE (binding requests), DTLS (OpenSSL)
and SRTP (libsrtp): each publishes Opus-sized audio at 50 packets/s with the RFC 6464
level (participant 0 is loud, so it becomes the dominant speaker) and VP8-shaped video in
three simulcast layers (rid q/h/f, periodic keyframes), and receives everything the SFU
forwards. Reports forwarded packets/s, the SFU process's CPU (µs per forwarded packet,
share of one core) and forwarding latency p50/p99 (send timestamp in the payload's last
8 bytes, read by the receiving synthetic subscriber in the same process and clock).
``benchmarks/sfu_vs_janus.py`` feeds Janus the same load with these pieces
(``Synthetic``, ``connect_media``, ``pump``).

Profiles (``--profile``): ``light`` is the original load (simulcast layers at 10/20/40
packets/s of 250/600/1000 B, every participant's audio at 50 packets/s, no layout);
``realistic`` is a real 1080p/540p/270p simulcast sender (25/75/240 packets/s of
700/1000/1200 B), Opus at 50 packets/s for the ``--speakers`` talking participants and
DTX (one 20-byte comfort-noise packet every 400 ms, level 127) for the others, a keyframe
every 3 s per layer, and each participant showing ``--visible`` tiles (a ``layout``
message naming the next participants), which get the top layer. ``--neighbour`` runs a
CPU-bound process (a busy loop, killed by PID afterwards) for the whole measurement.

The load generator is Python too and shares the 2-core machine, so latency includes
its own scheduling delay: read it as an upper bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import os
import re
import secrets
import select
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pylibsrtp
from aioice import stun
from OpenSSL import SSL
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
from visavis.sfu.dtls import DtlsIdentity
from visavis.tokens import sign_token

SECRET = "bench-secret"
LAYERS = (("q", 10, 250), ("h", 20, 600), ("f", 40, 1000))  # rid, packets/s, bytes
AUDIO_PPS, AUDIO_BYTES = 50, 80
KEYFRAME_EVERY = 1.0
DTX_PPS, DTX_BYTES = 2.5, 20  # Opus DTX: a comfort-noise frame every 400 ms


@dataclass(frozen=True)
class Profile:
    """What each synthetic participant sends, and what it shows."""

    name: str
    layers: tuple[tuple[str, float, int], ...]  # rid (lowest first), packets/s, bytes
    speakers: int | None  # participants whose audio is speech; the others send DTX
    keyframe_every: float
    visible: int  # tiles each participant shows (layout message); 0: none sent


PROFILES = {
    "light": Profile("light", LAYERS, None, KEYFRAME_EVERY, 0),
    "realistic": Profile(
        "realistic", (("q", 25, 700), ("h", 75, 1000), ("f", 240, 1200)), 2, 3.0, 4
    ),
}


def profile_of(args: argparse.Namespace) -> Profile:
    """The profile named by ``--profile``, with ``--speakers`` / ``--visible`` applied."""
    base = PROFILES[getattr(args, "profile", "light")]
    speakers = getattr(args, "speakers", None)
    visible = getattr(args, "visible", None)
    return Profile(
        base.name,
        base.layers,
        base.speakers if speakers is None else speakers,
        base.keyframe_every,
        base.visible if visible is None else visible,
    )


def visible_for(index: int, n: int, count: int) -> list[int]:
    """The tiles participant ``index`` shows: the next ``count`` participants."""
    return [(index + k) % n for k in range(1, min(count, n - 1) + 1)]


@contextlib.contextmanager
def neighbour(enabled: bool, core: int | None = None) -> Iterator[int | None]:
    """A CPU-bound neighbour process (a busy loop) for the block, pinned to ``core`` if
    given ("on the other core"), else wherever the scheduler puts it; killed by its PID."""
    if not enabled:
        yield None
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    if core is not None:
        os.sched_setaffinity(proc.pid, {core})
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def _offer(
    ident: DtlsIdentity,
    ufrag: str,
    pwd: str,
    ssrcs: dict[str, int],
    slots: int,
    setup: str = "actpass",
    high_first: bool = False,
    layers: tuple[tuple[str, float, int], ...] = LAYERS,
) -> str:
    """The synthetic participant's offer; visavis wants the simulcast rids lowest layer
    first, Janus highest first (``high_first``)."""
    rids = [rid for rid, _, _ in layers][:: -1 if high_first else 1]
    common = [
        f"a=ice-ufrag:{ufrag}",
        f"a=ice-pwd:{pwd}",
        f"a=fingerprint:sha-256 {ident.fingerprint}",
        f"a=setup:{setup}",
        "a=rtcp-mux",
        "c=IN IP4 0.0.0.0",
    ]
    mids = ["0", "1"] + [str(2 + i) for i in range(2 * slots)]
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE " + " ".join(mids)]
    lines += [
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "a=mid:0",
        "a=sendonly",
        *common,
        "a=rtpmap:111 opus/48000/2",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        f"a=ssrc:{ssrcs['audio']} cname:bench",
    ]
    lines += [
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
        "a=mid:1",
        "a=sendonly",
        *common,
        "a=rtpmap:96 VP8/90000",
        "a=rtpmap:97 rtx/90000",
        "a=fmtp:97 apt=96",
        "a=rtcp-fb:96 nack",
        "a=rtcp-fb:96 nack pli",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        *[f"a=rid:{rid} send" for rid in rids],
        "a=simulcast:send " + ";".join(rids),
    ]
    for i in range(slots):
        lines += [
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            f"a=mid:{2 + 2 * i}",
            "a=recvonly",
            *common,
            "a=rtpmap:111 opus/48000/2",
            "a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        ]
        lines += [
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
            f"a=mid:{3 + 2 * i}",
            "a=recvonly",
            *common,
            "a=rtpmap:96 VP8/90000",
            "a=rtcp-fb:96 nack",
        ]
    return "\r\n".join(lines) + "\r\n"


def stun_reply(data: bytes, addr: tuple[str, int], local_pwd: str) -> bytes | None:
    """The success response to a STUN binding request (a peer's connectivity check or
    keepalive), or None if ``data`` is not one."""
    try:
        request = stun.parse_message(data)
    except ValueError:
        return None
    if request.message_method != stun.Method.BINDING or request.message_class != stun.Class.REQUEST:
        return None
    response = stun.Message(
        stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=request.transaction_id
    )
    response.attributes["XOR-MAPPED-ADDRESS"] = addr
    response.add_message_integrity(local_pwd.encode())
    response.add_fingerprint()
    return bytes(response)


def connect_media(
    sock: socket.socket,
    ident: DtlsIdentity,
    local_ufrag: str,
    remote_sdp: str,
    local_pwd: str | None = None,
    keys: dict[str, Any] | None = None,
) -> tuple[tuple[str, int], pylibsrtp.Session, pylibsrtp.Session]:
    """ICE check with USE-CANDIDATE to the first IPv4 host candidate of ``remote_sdp``
    (an ICE-lite peer answers it), then the DTLS handshake as client, blocking. With
    ``local_pwd``, the peer's own binding requests are answered meanwhile (Janus sends
    some even in ICE-lite mode and fails ICE without answers).

    Returns the remote address and the outbound and inbound SRTP sessions; leaves the
    socket non-blocking. ``keys`` (if given) receives the SRTP profile and the master
    keys (``tx``, ``rx``) for the C traffic loop.
    """
    sdp = remote_sdp
    ufrag = re.search(r"a=ice-ufrag:(\S+)", sdp).group(1)  # type: ignore[union-attr]
    pwd = re.search(r"a=ice-pwd:(\S+)", sdp).group(1)  # type: ignore[union-attr]
    cand = re.search(r"a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ host", sdp)
    assert cand is not None
    remote = (cand.group(1), int(cand.group(2)))
    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    request.attributes["USERNAME"] = f"{ufrag}:{local_ufrag}"
    request.attributes["PRIORITY"] = 1
    request.attributes["ICE-CONTROLLING"] = secrets.randbits(64)
    request.attributes["USE-CANDIDATE"] = None
    request.add_message_integrity(pwd.encode())
    request.add_fingerprint()
    answered = False
    for attempt in range(5):
        sock.settimeout(0.5 * (attempt + 1))
        sock.sendto(bytes(request), remote)
        for _ in range(10):
            try:
                data, addr = sock.recvfrom(2000)
            except TimeoutError:
                break
            reply = stun_reply(data, addr, local_pwd) if local_pwd else None
            if reply is not None:
                sock.sendto(reply, addr)
            elif data[4:8] == b"\x21\x12\xa4\x42" and data[8:20] == request.transaction_id:
                answered = True
                break
        if answered:
            break
    else:
        raise TimeoutError(f"no ICE answer from {remote}")
    sock.settimeout(0.5)
    conn = SSL.Connection(ident.context)
    conn.set_connect_state()
    for _ in range(40):  # a bounded handshake, retransmitting on silence
        try:
            conn.do_handshake()
            break
        except SSL.WantReadError:
            pass
        while True:
            try:
                sock.sendto(conn.bio_read(1500), remote)
            except SSL.Error:
                break
        try:
            data, addr = sock.recvfrom(2000)
        except TimeoutError:
            # The peer may not have been listening yet (an ICE-lite server starts DTLS
            # once it has seen the nominating check): resend our flight.
            conn.DTLSv1_handle_timeout()
            continue
        reply = stun_reply(data, addr, local_pwd) if local_pwd else None
        if reply is not None:
            sock.sendto(reply, addr)
        elif 19 < data[0] < 64:  # DTLS only (RFC 7983); e.g. a retransmitted STUN answer
            conn.bio_write(data)
    else:
        raise TimeoutError(f"DTLS handshake with {remote} did not finish")
    k, s = 16, 14 if conn.get_selected_srtp_profile() == b"SRTP_AES128_CM_SHA1_80" else 12
    profile = (
        pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
        if s == 14
        else pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM
    )
    m = conn.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (k + s))
    client_key, server_key = m[:k] + m[2 * k : 2 * k + s], m[k : 2 * k] + m[2 * k + s :]
    if keys is not None:
        keys.update(profile=int(profile), tx=client_key, rx=server_key)
    tx = pylibsrtp.Session(
        pylibsrtp.Policy(
            key=client_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile
        )
    )
    rx = pylibsrtp.Session(
        pylibsrtp.Policy(
            key=server_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile
        )
    )
    sock.setblocking(False)
    return remote, tx, rx


@dataclass
class Synthetic:
    """One synthetic participant: control WebSocket, UDP socket, DTLS, SRTP."""

    index: int
    url: str
    slots: int
    loud: bool
    host: str = "127.0.0.1"
    profile: Profile = PROFILES["light"]
    ident: DtlsIdentity = field(default_factory=DtlsIdentity)
    ufrag: str = field(default_factory=lambda: secrets.token_hex(4))
    pwd: str = field(default_factory=lambda: secrets.token_hex(12))
    sock: socket.socket = field(
        default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    )
    ws: ClientConnection | None = None
    remote: tuple[str, int] | None = None
    keys: dict[str, Any] = field(default_factory=dict)
    tx: pylibsrtp.Session | None = None
    rx: pylibsrtp.Session | None = None
    answer_event: asyncio.Event = field(default_factory=asyncio.Event)
    answer: dict[str, Any] = field(default_factory=dict)
    ssrcs: dict[str, int] = field(default_factory=dict)
    seq: dict[str, int] = field(default_factory=dict)
    received: int = 0
    offers: int = 0  # offers sent (the first, and one per renegotiate request)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def join(self) -> None:
        self.sock.bind((self.host, 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.ssrcs = {
            "audio": secrets.randbits(32),
            **{rid: secrets.randbits(32) for rid, _, _ in self.profile.layers},
        }
        self.seq = {k: 0 for k in self.ssrcs}
        token = sign_token(
            SECRET,
            {"room": "bench", "call": "c", "user": f"u{self.index}", "device": "d"},
            now=time.time(),
            ttl=600,
        )
        self.ws = await connect(self.url, max_size=1 << 22)
        await self.ws.send(json.dumps({"type": "join", "token": token}))
        self.tasks.add(asyncio.create_task(self._read()))
        await self.offer()

    async def offer(self) -> None:
        assert self.ws is not None
        self.offers += 1
        self.answer_event.clear()
        sdp = _offer(
            self.ident, self.ufrag, self.pwd, self.ssrcs, self.slots, layers=self.profile.layers
        )
        await self.ws.send(json.dumps({"type": "offer", "sdp": sdp}))
        await asyncio.wait_for(self.answer_event.wait(), 20)

    async def _read(self) -> None:
        assert self.ws is not None
        async for raw in self.ws:
            message = json.loads(raw)
            if message["type"] == "answer":
                self.answer = message
                self.answer_event.set()
            elif message["type"] == "renegotiate":
                self.tasks.add(asyncio.create_task(self.offer()))

    def connect_media(self) -> None:
        """ICE check with USE-CANDIDATE, then the DTLS handshake, blocking."""
        self.remote, self.tx, self.rx = connect_media(
            self.sock, self.ident, self.ufrag, self.answer["sdp"], keys=self.keys
        )

    async def show(self, visible: list[str]) -> None:
        """Tell the SFU which tiles this participant shows (the ``layout`` message)."""
        assert self.ws is not None
        await self.ws.send(json.dumps({"type": "layout", "visible": visible}))

    def send(self, kind: str, size: int, keyframe: bool, ts: int, level: int = -1) -> None:
        """One packet; ``level`` is the audio level in -dBov (-1: loud if ``loud``)."""
        assert self.tx is not None and self.remote is not None
        seq = self.seq[kind] = (self.seq[kind] + 1) & 0xFFFF
        if kind == "audio":
            if level < 0:
                level = 0 if self.loud else 127
            ext = bytes((0xBE, 0xDE, 0, 1, 0x10, ord("0"), 0x20, level))
            pt = 111
        else:
            ext = bytes((0xBE, 0xDE, 0, 1, 0x10, ord("1"), 0x40, ord(kind)))
            pt = 96
        header = struct.pack("!BBHII", 0x90, 0x80 | pt, seq, ts, self.ssrcs[kind])
        body = payload(kind, size, keyframe, time.perf_counter())
        self.sock.sendto(self.tx.protect(header + ext + body), self.remote)


# VP8 payload descriptor (S=1, PID 0) + frame tag (show_frame, P=0 on keyframes) + the
# keyframe start code and a 320x240 size, so that any SFU's keyframe detector accepts it.
_VP8_KEY = bytes((0x10, 0x10, 0x00, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00))
_VP8_DELTA = bytes((0x10, 0x11, 0x00, 0x00))


def payload(kind: str, size: int, keyframe: bool, sent_at: float) -> bytes:
    """A synthetic RTP payload of ``size`` bytes ending with the send time (8 bytes)."""
    head = b"" if kind == "audio" else _VP8_KEY if keyframe else _VP8_DELTA
    return head + bytes(size - 8 - len(head)) + struct.pack("!d", sent_at)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Window:
    """What the load generator saw during the measurement window."""

    wall: float
    cpu: float  # the measured server process's user+system seconds
    sent: int
    rtp_received: int  # forwarded RTP packets that reached the subscribers' sockets
    other_received: int  # RTCP, DTLS, STUN
    latencies: list[float]  # ms, sampled
    percentiles: tuple[float, float, float, int] | None = None  # computed by sfu_blast.c
    # sfu_blast.c: per second of the window, the worst sampled latency (ms) and the
    # server's CPU seconds; with --warmup 0 the first seconds are the join transient
    by_second: dict[str, list[float]] = field(default_factory=dict)
    arrival: dict[str, float] = field(default_factory=dict)  # sfu_blast.c's kernel stamps

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        if self.percentiles is not None:
            p50, p99, p999, samples = self.percentiles
            return {
                "sent_pps": round(self.sent / self.wall),
                "received_rtp_pps": round(self.rtp_received / self.wall),
                "server_cpu_core_share": round(self.cpu / self.wall, 3),
                "server_cpu_us_per_received_packet": round(
                    self.cpu / max(self.rtp_received, 1) * 1e6, 2
                ),
                "received_pps_per_core": round(self.rtp_received / max(self.cpu, 1e-9)),
                "latency_ms_p50": round(p50, 3),
                "latency_ms_p99": round(p99, 3),
                "latency_ms_p999": round(p999, 3),
                "latency_samples": samples,
                **self.arrival,
                **self.by_second,
            }
        return {
            "sent_pps": round(self.sent / self.wall),
            "received_rtp_pps": round(self.rtp_received / self.wall),
            "server_cpu_core_share": round(self.cpu / self.wall, 3),
            "server_cpu_us_per_received_packet": round(
                self.cpu / max(self.rtp_received, 1) * 1e6, 2
            ),
            "received_pps_per_core": round(self.rtp_received / max(self.cpu, 1e-9)),
            "latency_ms_p50": round(statistics.median(lat), 3) if lat else None,
            "latency_ms_p99": round(lat[int(len(lat) * 0.99)], 3) if lat else None,
            "latency_ms_p999": round(lat[int(len(lat) * 0.999)], 3) if lat else None,
            "latency_samples": len(lat),
        }


async def pump(
    senders: list[Synthetic],
    receivers: list[tuple[socket.socket, pylibsrtp.Session | None, str | None]],
    server_pid: int,
    warmup: float,
    seconds: float,
    sample: int,
    on_start: Callable[[], Awaitable[None]] | None = None,
    profile: Profile = PROFILES["light"],
) -> Window:
    """Publish audio and three simulcast layers from every sender and drain every
    receiving socket for ``warmup + seconds``; measure over the last ``seconds``.

    Latency: 1 in ``sample`` received RTP packets is decrypted and its send time (the
    payload's last 8 bytes) compared with the clock of this same process. A receiver
    with an ICE password answers the binding requests (keepalives) it gets.
    """
    latencies: list[float] = []
    # (due, index, kind, size, period, level)
    schedule: list[tuple[float, int, str, int, float, int]] = []
    start = time.perf_counter()
    for p in senders:
        if profile.speakers is None:  # light: everyone speaks, participant 0 loud
            audio = (AUDIO_BYTES, 1 / AUDIO_PPS, 0 if p.loud else 127)
        elif p.index < profile.speakers:  # speech: 0 loud, the others moderate
            audio = (AUDIO_BYTES, 1 / AUDIO_PPS, 0 if p.index == 0 else 30)
        else:
            audio = (DTX_BYTES, 1 / DTX_PPS, 127)
        schedule.append((start + p.index * 0.0007, p.index, "audio", *audio))
        for rid, pps, size in profile.layers:
            schedule.append((start + p.index * 0.0011, p.index, rid, size, 1 / pps, -1))
    heapq.heapify(schedule)
    by_index = {p.index: p for p in senders}
    last_key = {(p.index, rid): -1e9 for p in senders for rid, _, _ in profile.layers}
    socks = {sock.fileno(): (sock, rx, pwd) for sock, rx, pwd in receivers}
    cpu0 = wall0 = 0.0
    rtp = other = sent = 0
    warmup_end = start + warmup
    end = warmup_end + seconds
    measuring = False
    while True:
        now = time.perf_counter()
        if not measuring and now >= warmup_end:
            if on_start is not None:
                await on_start()
            measuring, cpu0, wall0 = True, cpu_seconds(server_pid), time.perf_counter()
            rtp = other = sent = 0
            latencies.clear()
            now = time.perf_counter()
        if now >= end:
            break
        while schedule[0][0] <= now:
            due, index, kind, size, period, level = schedule[0]
            key = False
            if kind != "audio" and now - last_key[(index, kind)] >= profile.keyframe_every:
                key, last_key[(index, kind)] = True, now
            clock = 48000 if kind == "audio" else 90000
            by_index[index].send(kind, size, key, int(now * clock) & 0xFFFFFFFF, level)
            sent += 1
            heapq.heapreplace(schedule, (due + period, index, kind, size, period, level))
        timeout = max(0.0, min(0.005, schedule[0][0] - time.perf_counter()))
        readable, _, _ = select.select(list(socks), [], [], timeout)
        for fd in readable:
            sock, rx, pwd = socks[fd]
            for _ in range(64):
                try:
                    data, addr = sock.recvfrom(2048)
                except BlockingIOError:
                    break
                if not (127 < data[0] < 192) or 192 <= data[1] <= 223:
                    other += 1
                    reply = stun_reply(data, addr, pwd) if pwd and data[0] < 2 else None
                    if reply is not None:
                        sock.sendto(reply, addr)
                    continue
                rtp += 1
                if rx is not None and rtp % sample == 0:
                    try:
                        plain = rx.unprotect(data)
                    except pylibsrtp.Error:
                        continue
                    (sent_at,) = struct.unpack_from("!d", plain, len(plain) - 8)
                    latencies.append((time.perf_counter() - sent_at) * 1000)
    cpu = cpu_seconds(server_pid) - cpu0
    wall = time.perf_counter() - wall0
    return Window(wall, cpu, sent, rtp, other, latencies)


_BLAST: str | None = None


def blaster() -> str:
    """``benchmarks/sfu_blast.c`` compiled (once per process) into a temporary directory."""
    global _BLAST
    if _BLAST is None:
        out = os.path.join(tempfile.mkdtemp(prefix="vv-blast-"), "sfu_blast")
        source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sfu_blast.c")
        subprocess.run(["cc", "-O2", "-o", out, source, "-lsrtp2"], check=True)
        _BLAST = out
    return _BLAST


Receiver = tuple[socket.socket, dict[str, Any] | None, str | None]  # socket, SRTP keys, ICE pwd


async def pump_c(
    senders: list[Synthetic],
    receivers: list[Receiver],
    server_pid: int,
    warmup: float,
    seconds: float,
    sample: int,
    on_start: Callable[[], Awaitable[None]] | None = None,
    profile: Profile = PROFILES["light"],
) -> Window:
    """:func:`pump`'s schedule and measurement, run by ``sfu_blast.c``: the sockets are
    handed to it, STUN binding requests come back here to be answered."""
    ids = {sock.fileno(): i for i, (sock, _, _) in enumerate(receivers)}
    for p in senders:
        if p.sock.fileno() not in ids:
            ids[p.sock.fileno()] = len(receivers)
            receivers = [*receivers, (p.sock, None, None)]
    lines = [f"C {server_pid} {warmup} {seconds} {sample} {profile.keyframe_every}"]
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    lines.append(f"U {theirs.fileno()}")
    for i, (sock, keys, _) in enumerate(receivers):
        rx = keys["rx"].hex() if keys else "-"
        lines.append(f"K {i} {sock.fileno()} {keys['profile'] if keys else 0} {rx}")
    for n, p in enumerate(senders):
        assert p.remote is not None and p.keys
        lines.append(
            f"T {n} {ids[p.sock.fileno()]} {p.keys['profile']} {p.keys['tx'].hex()} "
            f"{p.remote[0]} {p.remote[1]}"
        )
        if profile.speakers is None:
            audio = (AUDIO_BYTES, 1 / AUDIO_PPS, 0 if p.loud else 127)
        elif p.index < profile.speakers:
            audio = (AUDIO_BYTES, 1 / AUDIO_PPS, 0 if p.index == 0 else 30)
        else:
            audio = (DTX_BYTES, 1 / DTX_PPS, 127)
        size, period, level = audio
        lines.append(
            f"S {n} {p.ssrcs['audio']} 111 a {0x20} {level} {size} {period} {p.index * 0.0007}"
        )
        for rid, pps, size in profile.layers:
            lines.append(
                f"S {n} {p.ssrcs[rid]} 96 v {0x40} {ord(rid)} {size} {1 / pps} {p.index * 0.0011}"
            )
    lines.append("G")
    fds = [sock.fileno() for sock, _, _ in receivers] + [theirs.fileno()]
    proc = await asyncio.create_subprocess_exec(
        blaster(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        pass_fds=fds,
    )
    theirs.close()
    assert proc.stdin is not None and proc.stdout is not None
    loop = asyncio.get_running_loop()

    def answer_stun() -> None:
        while True:
            try:
                message = ours.recv(4096)
            except BlockingIOError:
                return
            sock, _, pwd = receivers[int.from_bytes(message[:2], "big")]
            addr = (socket.inet_ntoa(message[2:6]), int.from_bytes(message[6:8], "big"))
            reply = stun_reply(message[8:], addr, pwd) if pwd else None
            if reply is not None:
                sock.sendto(reply, addr)

    loop.add_reader(ours.fileno(), answer_stun)
    try:
        proc.stdin.write(("\n".join(lines) + "\n").encode())
        await proc.stdin.drain()
        proc.stdin.close()
        first = await proc.stdout.readline()
        if first.strip() == b"start":
            if on_start is not None:
                await on_start()
            first = await proc.stdout.readline()
        result = json.loads(first)
        await proc.wait()
    finally:
        loop.remove_reader(ours.fileno())
        ours.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    window = Window(
        result["wall"],
        result["cpu"],
        result["sent"],
        result["rtp_received"],
        result["other_received"],
        [],
    )
    window.percentiles = (result["p50"], result["p99"], result["p999"], result["samples"])
    window.by_second = {k: result[k] for k in ("max_ms_by_second", "cpu_s_by_second")}
    # The kernel's arrival stamp at the subscriber's socket (the server's send, on
    # loopback): the server's latency without the generator's own wait for a core.
    window.arrival = {
        f"arrival_ms_{q}": round(result[f"arrival_{q}"], 3) for q in ("p50", "p99", "p999")
    }
    return window


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement of the visavis SFU (its own process, started and stopped here)."""
    env = dict(
        os.environ,
        VISAVIS_SHARED_SECRET=SECRET,
        VISAVIS_DATA_DIR="/tmp/visavis-bench",
        VISAVIS_SFU__PORT="0",
        VISAVIS_SFU__MEDIA_PORT="0",
        VISAVIS_SFU__INITIAL_BANDWIDTH="100000000",  # never the limit: the same layers as Janus
        VISAVIS_SFU__DEAD_TIMEOUT="60",
        VISAVIS_SFU__RTCP_RATE="1000",
        PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "src"),
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "visavis.sfu",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stdin is not None
    stdin, stdout = proc.stdin, proc.stdout
    try:
        ready = json.loads(await stdout.readline())
        n = args.participants
        profile = profile_of(args)
        people = [
            Synthetic(i, ready["control_url"], n - 1, loud=(i == 0), profile=profile)
            for i in range(n)
        ]
        for p in people:
            await p.join()
        await asyncio.sleep(1.0)  # let renegotiations settle
        for p in people:
            await p.offer()
            p.connect_media()
            if profile.visible:
                await p.show([f"u{j}/d" for j in visible_for(p.index, n, profile.visible)])
        join_cpu = cpu_seconds(proc.pid)  # startup, joins, offers, ICE and DTLS
        before: dict[str, Any] = {}

        async def read_stats() -> None:
            stdin.write(b"stats\n")
            before.update(json.loads(await stdout.readline()))

        with neighbour(getattr(args, "neighbour", False), getattr(args, "neighbour_core", None)):
            if getattr(args, "generator", "c") == "c":
                window = await pump_c(
                    people,
                    [(p.sock, p.keys, None) for p in people],
                    proc.pid,
                    args.warmup,
                    args.seconds,
                    args.sample,
                    read_stats,
                    profile,
                )
            else:
                window = await pump(
                    people,
                    [(p.sock, p.rx, None) for p in people],
                    proc.pid,
                    args.warmup,
                    args.seconds,
                    args.sample,
                    read_stats,
                    profile,
                )
        stdin.write(b"stats\n")
        report = json.loads(await stdout.readline())
        forwarded = report["packets_forwarded"] - before["packets_forwarded"]
        for p in people:
            for task in p.tasks:
                task.cancel()
        for p in people:
            if p.ws is not None:
                await p.ws.close()
            p.sock.close()
        stdin.write(b"stop\n")
        await stdin.drain()
        await stdout.readline()
        await asyncio.wait_for(proc.wait(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return {
        "participants": n,
        "profile": profile.name,
        **window.summary(),
        "sfu_forwarded_pps": round(forwarded / window.wall),
        "sfu_cpu_us_per_forwarded_packet": round(window.cpu / max(forwarded, 1) * 1e6, 2),
        "sfu_cpu_s_until_media": round(join_cpu, 2),
        "offers_per_participant": round(sum(p.offers for p in people) / n, 1),
        "sfu_dropped": {k: v for k, v in report["dropped"].items() if v},
        "sfu_decoder_modules": report["decoder_modules"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--sample", type=int, default=20, help="decrypt 1 in N for latency")
    add_profile_options(parser)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


def add_profile_options(parser: argparse.ArgumentParser) -> None:
    """--profile, --speakers, --visible, --neighbour (shared with sfu_vs_janus.py)."""
    parser.add_argument("--profile", choices=sorted(PROFILES), default="light")
    parser.add_argument("--speakers", type=int, help="participants speaking (others send DTX)")
    parser.add_argument("--visible", type=int, help="tiles each participant shows")
    parser.add_argument(
        "--neighbour", action="store_true", help="run a CPU-bound process beside the server"
    )
    parser.add_argument(
        "--neighbour-core",
        type=int,
        help="pin that process to this core (e.g. the last: a neighbour on the other core)",
    )
    parser.add_argument(
        "--generator",
        choices=("c", "python"),
        default="c",
        help="traffic loop: sfu_blast.c (default) or the Python one",
    )


if __name__ == "__main__":
    main()
