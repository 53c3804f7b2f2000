"""SFU load benchmark: synthetic SRTP publishers and subscribers, no codecs.

    .venv/bin/python benchmarks/sfu_load.py --participants 32 --seconds 8

Starts the SFU in its own process (``python -m visavis.sfu``), joins N synthetic
participants through the real control protocol, ICE (binding requests), DTLS (OpenSSL)
and SRTP (libsrtp): each publishes Opus-sized audio at 50 packets/s with the RFC 6464
level (participant 0 is loud, so it becomes the dominant speaker) and VP8-shaped video in
three simulcast layers (rid q/h/f, periodic keyframes), and receives everything the SFU
forwards. Reports forwarded packets/s, the SFU process's CPU (µs per forwarded packet,
share of one core) and forwarding latency p50/p99 (send timestamp carried in the payload,
read by the receiving synthetic subscriber in the same process and clock).

The load generator is Python too and shares the 2-core machine, so latency includes
its own scheduling delay: read it as an upper bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import select
import socket
import statistics
import struct
import sys
import time
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


def _offer(ident: DtlsIdentity, ufrag: str, pwd: str, ssrcs: dict[str, int], slots: int) -> str:
    common = [
        f"a=ice-ufrag:{ufrag}",
        f"a=ice-pwd:{pwd}",
        f"a=fingerprint:sha-256 {ident.fingerprint}",
        "a=setup:actpass",
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
        *[f"a=rid:{rid} send" for rid, _, _ in LAYERS],
        "a=simulcast:send " + ";".join(rid for rid, _, _ in LAYERS),
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


@dataclass
class Synthetic:
    """One synthetic participant: control WebSocket, UDP socket, DTLS, SRTP."""

    index: int
    url: str
    slots: int
    loud: bool
    ident: DtlsIdentity = field(default_factory=DtlsIdentity)
    ufrag: str = field(default_factory=lambda: secrets.token_hex(4))
    pwd: str = field(default_factory=lambda: secrets.token_hex(12))
    sock: socket.socket = field(
        default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    )
    ws: ClientConnection | None = None
    remote: tuple[str, int] | None = None
    tx: pylibsrtp.Session | None = None
    rx: pylibsrtp.Session | None = None
    answer_event: asyncio.Event = field(default_factory=asyncio.Event)
    answer: dict[str, Any] = field(default_factory=dict)
    ssrcs: dict[str, int] = field(default_factory=dict)
    seq: dict[str, int] = field(default_factory=dict)
    received: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def join(self) -> None:
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.ssrcs = {
            "audio": secrets.randbits(32),
            **{rid: secrets.randbits(32) for rid, _, _ in LAYERS},
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
        self.answer_event.clear()
        sdp = _offer(self.ident, self.ufrag, self.pwd, self.ssrcs, self.slots)
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
        sdp = self.answer["sdp"]
        ufrag = re.search(r"a=ice-ufrag:(\S+)", sdp).group(1)  # type: ignore[union-attr]
        pwd = re.search(r"a=ice-pwd:(\S+)", sdp).group(1)  # type: ignore[union-attr]
        cand = re.search(r"a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ host", sdp)
        assert cand is not None
        self.remote = (cand.group(1), int(cand.group(2)))
        request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
        request.attributes["USERNAME"] = f"{ufrag}:{self.ufrag}"
        request.attributes["PRIORITY"] = 1
        request.attributes["ICE-CONTROLLING"] = secrets.randbits(64)
        request.attributes["USE-CANDIDATE"] = None
        request.add_message_integrity(pwd.encode())
        request.add_fingerprint()
        self.sock.settimeout(2.0)
        self.sock.sendto(bytes(request), self.remote)
        self.sock.recvfrom(2000)
        conn = SSL.Connection(self.ident.context)
        conn.set_connect_state()
        while True:
            try:
                conn.do_handshake()
                break
            except SSL.WantReadError:
                pass
            while True:
                try:
                    self.sock.sendto(conn.bio_read(1500), self.remote)
                except SSL.Error:
                    break
            data, _ = self.sock.recvfrom(2000)
            conn.bio_write(data)
        k, s = 16, 14 if conn.get_selected_srtp_profile() == b"SRTP_AES128_CM_SHA1_80" else 12
        profile = (
            pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
            if s == 14
            else pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM
        )
        m = conn.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (k + s))
        client_key, server_key = m[:k] + m[2 * k : 2 * k + s], m[k : 2 * k] + m[2 * k + s :]
        self.tx = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=client_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile
            )
        )
        self.rx = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=server_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile
            )
        )
        self.sock.setblocking(False)

    def send(self, kind: str, size: int, keyframe: bool, ts: int) -> None:
        assert self.tx is not None and self.remote is not None
        seq = self.seq[kind] = (self.seq[kind] + 1) & 0xFFFF
        stamp = struct.pack("!d", time.perf_counter())
        if kind == "audio":
            ext = bytes((0xBE, 0xDE, 0, 1, 0x10, ord("0"), 0x20, 0 if self.loud else 127))
            pt = 111
            payload = stamp + bytes(size - 8)
        else:
            ext = bytes((0xBE, 0xDE, 0, 2, 0x10, ord("1"), 0x40 | 0, ord(kind), 0, 0, 0, 0))
            ext = bytes((0xBE, 0xDE, 0, 1, 0x10, ord("1"), 0x40, ord(kind)))
            pt = 96
            payload = bytes((0x10, 0x00 if keyframe else 0x01)) + stamp + bytes(size - 10)
        header = struct.pack("!BBHII", 0x90, 0x80 | pt, seq, ts, self.ssrcs[kind])
        self.sock.sendto(self.tx.protect(header + ext + payload), self.remote)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    env = dict(
        os.environ,
        VISAVIS_SHARED_SECRET=SECRET,
        VISAVIS_DATA_DIR="/tmp/visavis-bench",
        VISAVIS_SFU__PORT="0",
        VISAVIS_SFU__MEDIA_PORT="0",
        VISAVIS_SFU__INITIAL_BANDWIDTH="10000000",
        VISAVIS_SFU__DEAD_TIMEOUT="60",
        VISAVIS_SFU__RTCP_RATE="1000",
        PYTHONPATH="src",
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
    ready = json.loads(await proc.stdout.readline())
    n = args.participants
    people = [Synthetic(i, ready["control_url"], n - 1, loud=(i == 0)) for i in range(n)]
    for p in people:
        await p.join()
    await asyncio.sleep(1.0)  # let renegotiations settle
    for p in people:
        await p.offer()
        p.connect_media()
    latencies: list[float] = []
    schedule: list[tuple[float, int, str, int]] = []
    start = time.perf_counter()
    for p in people:
        schedule.append((start + p.index * 0.0007, p.index, "audio", AUDIO_BYTES))
        for rid, _, size in LAYERS:
            schedule.append((start + p.index * 0.0011, p.index, rid, size))
    period = {"audio": 1 / AUDIO_PPS, **{rid: 1 / pps for rid, pps, _ in LAYERS}}
    last_key = {(p.index, rid): -1e9 for p in people for rid, _, _ in LAYERS}
    socks = {p.sock.fileno(): p for p in people}
    cpu0, wall0, fwd_received = 0.0, 0.0, 0
    sfu_before: dict[str, Any] = {}
    warmup_end = start + args.warmup
    end = warmup_end + args.seconds
    measuring = False
    sent = 0
    while True:
        now = time.perf_counter()
        if not measuring and now >= warmup_end:
            measuring, cpu0, wall0, fwd_received, sent = True, cpu_seconds(proc.pid), now, 0, 0
            proc.stdin.write(b"stats\n")
            sfu_before = json.loads(await proc.stdout.readline())
            now = time.perf_counter()
        if now >= end:
            break
        schedule.sort()
        while schedule and schedule[0][0] <= now:
            due, index, kind, size = schedule.pop(0)
            p = people[index]
            key = False
            if kind != "audio" and now - last_key[(index, kind)] >= KEYFRAME_EVERY:
                key, last_key[(index, kind)] = True, now
            clock = 48000 if kind == "audio" else 90000
            p.send(kind, size, key, int(now * clock) & 0xFFFFFFFF)
            sent += 1
            schedule.append((due + period[kind], index, kind, size))
        timeout = max(0.0, min(0.005, schedule[0][0] - time.perf_counter()))
        readable, _, _ = select.select(list(socks), [], [], timeout)
        for fd in readable:
            p = socks[fd]
            for _ in range(64):
                try:
                    data = p.sock.recv(2048)
                except BlockingIOError:
                    break
                fwd_received += 1
                if (
                    fwd_received % args.sample == 0
                    and 127 < data[0] < 192
                    and not 192 <= data[1] <= 223
                ):
                    try:
                        plain = p.rx.unprotect(data)  # type: ignore[union-attr]
                    except pylibsrtp.Error:
                        continue
                    off = 12 + 4 * (plain[0] & 0x0F)
                    if plain[0] & 0x10:
                        off += 4 + 4 * struct.unpack_from("!H", plain, off + 2)[0]
                    if plain[1] & 0x7F == 96 or (plain[1] & 0x7F) != 111:
                        off += 2
                    (sent_at,) = struct.unpack_from("!d", plain, off)
                    latencies.append((time.perf_counter() - sent_at) * 1000)
    cpu = cpu_seconds(proc.pid) - cpu0
    wall = time.perf_counter() - wall0
    proc.stdin.write(b"stats\n")
    report = json.loads(await proc.stdout.readline())
    forwarded = report["packets_forwarded"] - sfu_before["packets_forwarded"]
    for p in people:
        if p.ws is not None:
            await p.ws.close()
    proc.stdin.write(b"stop\n")
    await proc.stdin.drain()
    await proc.stdout.readline()
    await proc.wait()
    latencies.sort()
    return {
        "participants": n,
        "sent_pps": round(sent / wall),
        "sfu_forwarded_pps": round(forwarded / wall),
        "received_by_generator_pps": round(fwd_received / wall),
        "sfu_cpu_core_share": round(cpu / wall, 3),
        "sfu_cpu_us_per_forwarded_packet": round(cpu / max(forwarded, 1) * 1e6, 2),
        "forwarded_pps_per_core": round(forwarded / max(cpu, 1e-9)),
        "latency_ms_p50": round(statistics.median(latencies), 3) if latencies else None,
        "latency_ms_p99": round(latencies[int(len(latencies) * 0.99)], 3) if latencies else None,
        "latency_samples": len(latencies),
        "sfu_dropped": {k: v for k, v in report["dropped"].items() if v},
        "sfu_decoder_modules": report["decoder_modules"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--sample", type=int, default=20, help="decrypt 1 in N for latency")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
