"""The SFU's media-port receive path, native: ``_fastpath.c`` through its Python binding.

One input is a short script of datagrams and control steps, played over real loopback
UDP sockets against a fresh forwarding table: a publisher with three simulcast layers
and an audio source, three subscribers (two on UDP, one without a UDP path, whose
packets go back to Python). Byte 0 picks the SRTP profile (bit 0) and the subscribers'
layer targets; then come steps of ``op, length (2 bytes), payload``, where ``op & 7`` is

0. a raw datagram from the publisher's address;
1. RTP from the publisher: the payload as plaintext, SRTP-protected with the publisher's
   key (so that it passes authentication), its SSRC set by ``op >> 3``;
2. RTCP from the publisher, protected likewise;
3. a raw datagram from an address no check authenticated;
4. a decrypted packet handed to ``Forwarder.forward`` (as Python does for an SSRC it
   learnt);
5. a control change, by ``op >> 3`` (``which = arg % 4``, ``what = arg // 4``): 0 a
   subscriber's layer target (which 0-2) or audio muted (which 3), 1 the video codec
   (VP8, VP9, H.264, AV1: how the C finds keyframes and layers), 2 the dependency
   descriptor's extension id, 3 and 4 a subscriber's spatial and temporal layer target;
6. drain now (datagrams otherwise pile up and one ``recvmmsg`` reads them together);
7. time passes.

The same script runs through the native module and through its pure-Python twin, and
both must give the same outcome (datagrams each subscriber gets, what goes back to
Python, counters, state): the twin is the specification. The native path must also
account for every datagram exactly once (forwarded in, dropped with a counter, or
handed to Python) and every packet it forwards must reach its subscriber or be counted
as a send failure. What Python is handed goes on through the Python half of the media
port (``MediaEndpoint.datagram_received``). ``python -m fuzz.run --asan`` runs it with the
extension built under AddressSanitizer and UBSan (``fuzz/native.py``).
"""

from __future__ import annotations

import select
import socket
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from fuzz.contract import Target
from visavis.sfu import _fastpath_py, fastpath
from visavis.sfu.stats import SfuStats
from visavis.sfu.udp import MediaEndpoint

if "atheris" in sys.modules:  # a fuzz run, not the CI replay: the native build or nothing
    if not fastpath.NATIVE:
        raise SystemExit("sfu_native: build the extension (python setup.py build_ext --inplace)")
    print(f"sfu_native: fuzzing {fastpath.fp.__file__}", file=sys.stderr, flush=True)

LAYER_SSRCS = (1000, 1001, 1002)
AUDIO_SSRC = 2000
NEW_SSRC = 3000  # no source: handed to Python, which learns it as layer 0 and forwards it
SSRCS = (*LAYER_SSRCS, AUDIO_SSRC, NEW_SSRC)
GCM, CM = fastpath.PROFILE_AEAD_AES_128_GCM, fastpath.PROFILE_AES128_CM_SHA1_80
KEY_LENGTH = {GCM: 28, CM: 30}
MAX_STEPS = 48
# pylibsrtp (the twin's SRTP) works in a 1,500-byte buffer: a valid packet longer than
# this, or one whose forwarded copy would not fit once protected, fails there and not in
# libsrtp2; such inputs are checked on the native path alone.
TWIN_LIMIT = 1300
WAIT = 10.0  # seconds for loopback datagrams to arrive (microseconds unless starved)


@dataclass(frozen=True)
class Step:
    kind: str  # "send", "forward", "target", "mute", "drain", "time"
    data: bytes = b""
    stray: bool = False  # sent from the unknown address
    valid: bool = False  # SRTP the publisher's key made (a plaintext to forward, for "forward")
    index: int = 0  # which source (forward) or video sink (target)
    value: int = 0


def _steps(data: bytes, client: Any) -> Iterator[Step]:
    """The script of one input; SRTP is applied here, once, so both runs get the
    same bytes (a plaintext libsrtp refuses to protect is sent as it is)."""
    pos, count = 1, 0
    while pos + 3 <= len(data) and count < MAX_STEPS:
        op = data[pos]
        payload = data[pos + 3 : pos + 3 + ((data[pos + 1] << 8) | data[pos + 2])]
        pos, count = pos + 3 + len(payload), count + 1
        kind, arg = op & 7, op >> 3
        if kind in (1, 4) and len(payload) >= 12 and arg % 8 < len(SSRCS):
            payload = payload[:8] + struct.pack("!I", SSRCS[arg % 8]) + payload[12:]
        if kind in (0, 3):
            yield Step("send", payload, stray=kind == 3)
        elif kind in (1, 2):
            try:
                protect = client.protect if kind == 1 else client.protect_rtcp
                yield Step("send", protect(payload), valid=True)
            except (fastpath.SrtpError, ValueError):
                yield Step("send", payload)
        elif kind == 4:
            yield Step("forward", payload, valid=True, index=arg % 4)
        elif kind == 5:
            value, which, what = (payload[0] if payload else 0), arg % 4, arg // 4
            if what == 1:
                yield Step("codec", value=value % 4)
            elif what == 2:
                yield Step("dd", value=value % 16 - 1)  # -1: none
            elif what in (3, 4):
                yield Step("spatial" if what == 3 else "temporal", index=which % 3, value=value % 8)
            elif which == 3:
                yield Step("mute", value=value - 128)  # negative: not muted
            else:
                yield Step("target", index=which, value=value % 4)
        elif kind == 6:
            yield Step("drain")
        else:
            yield Step("time", value=payload[0] if payload else 1)


_SOCKETS: dict[str, socket.socket] = {}


def _socket(name: str) -> socket.socket:
    """The loopback sockets, opened once per process and emptied before each input."""
    sock = _SOCKETS.get(name)
    if sock is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        _SOCKETS[name] = sock
    while True:
        try:
            sock.recv(65536)
        except BlockingIOError:
            return sock


_ENDPOINT: list[MediaEndpoint] = []


def _endpoint() -> MediaEndpoint:
    """The Python half of the demux, with empty tables (nothing in it changes)."""
    if not _ENDPOINT:
        _ENDPOINT.append(MediaEndpoint(SfuStats()))
    return _ENDPOINT[0]


_FORWARDERS: dict[ModuleType, Any] = {}


def _forwarder(fp: ModuleType, *args: Any) -> Any:
    """One Forwarder per implementation, initialised afresh for each input: the native
    one keeps its buffers across ``__init__`` (about 800 KB, too slow to allocate per
    input), as it keeps them across drains in the SFU."""
    forwarder = _FORWARDERS.get(fp)
    if forwarder is None:
        forwarder = _FORWARDERS[fp] = fp.Forwarder(*args)
    else:
        type(forwarder).__init__(forwarder, *args)
    return forwarder


@dataclass
class Outcome:
    sent: list[list[bytes]] = field(default_factory=lambda: [[], []])
    raw: list[bytes] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)
    outgoing: list[tuple[str, bytes]] = field(default_factory=list)
    levels: list[tuple[int, float]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)


class World:
    """One forwarding table on one implementation (``fp``: native or the twin)."""

    def __init__(self, fp: ModuleType, config: int) -> None:
        self.fp = fp
        profile = CM if config & 1 else GCM
        self.out = Outcome()
        self.stats = SfuStats()
        self.sfu, self.pub, self.stray = _socket("sfu"), _socket("pub"), _socket("stray")
        self.subs = [_socket("sub0"), _socket("sub1")]
        self.sfu_addr = self.sfu.getsockname()
        self.peers = {self.pub.getsockname(), self.stray.getsockname()}
        self.link = fp.Link("publisher")
        self.link.rx = fp.Session(bytes(range(1, 1 + KEY_LENGTH[profile])), profile, False)
        links = {fp.link_key(*self.pub.getsockname()): self.link}
        self.forwarder = _forwarder(fp, self.sfu, links, self.stats, self.on_slow)
        video: list[Any] = []
        audio: list[Any] = []
        self.layers = [fp.Source(i, True, -1, [None] * 16, video, None) for i in range(3)]
        self.audio = fp.Source(0, False, 1, None, audio, self.on_level)
        for ssrc, layer in zip(LAYER_SSRCS, self.layers, strict=True):
            self.link.sources[ssrc] = layer
        self.link.sources[AUDIO_SSRC] = self.audio
        self.sub_links = []
        for i in range(3):
            link = fp.Link(f"sub{i}")
            key = bytes(range(40 + i, 40 + i + KEY_LENGTH[profile]))
            link.tx = fp.Session(key, profile, True)
            if i < len(self.subs):
                link.set_destination(*self.subs[i].getsockname())
            self.sub_links.append(link)
            target = (config >> (1 + 2 * i)) & 3
            rewriter = fp.Rewriter(90000, initial_seq=65500 + 7 * i, initial_ts=0xFFFFF000 + i)
            video.append(
                fp.Sink(
                    link,
                    0x1110 + i,
                    100 + i,
                    (3, -1, 14)[i],
                    -1,
                    rewriter,
                    fp.Selector(target=target),
                )
            )
            rewriter = fp.Rewriter(48000, initial_seq=300 * i, initial_ts=7 * i)
            rewriter.switch(0)
            audio.append(fp.Sink(link, 0x2220 + i, 111, -1, (5, -1, 1)[i], rewriter, fp.Selector()))
        self.sinks = video + audio
        self.pending = 0  # datagrams sent to the SFU and not yet read
        self.split = False  # some drain found only part of them arrived (timing, not input)

    def on_level(self, level: int, now: float) -> None:
        assert 0 <= level <= 127
        self.out.levels.append((level, now))

    def on_slow(self, raw: Any, received: Any, outgoing: Any, now: float) -> None:
        for data, addr in raw or ():
            assert addr in self.peers
            self.out.raw.append(data)
            _endpoint().datagram_received(data, addr)
        for link, plain in received or ():
            assert link is self.link and len(plain) >= 12
            self.out.received.append(plain)
            if struct.unpack_from("!I", plain, 8)[0] == NEW_SSRC:
                self.forwarder.forward(self.layers[0], plain, now)
        for link, plain in outgoing or ():
            assert link in self.sub_links
            self.out.outgoing.append((link.owner, plain))

    def drain(self, now: float) -> None:
        """Read until every datagram sent is accounted for (arrival is not instant)."""
        deadline = time.monotonic() + WAIT
        while self.pending:
            before = self._accounted()
            if select.select([self.sfu], [], [], max(0.0, deadline - time.monotonic()))[0]:
                self.forwarder.drain(now, 256)
            read = self._accounted() - before
            assert read > 0 or time.monotonic() < deadline, "datagrams lost on loopback"
            assert read <= self.pending, "more datagrams accounted for than sent"
            self.split |= 0 < read < self.pending
            self.pending -= read

    def _accounted(self) -> int:
        d = self.stats.dropped
        return self.stats.packets_in + d["srtp_auth"] + d["garbage"] + len(self.out.raw)

    def collect(self) -> None:
        """Read what the subscribers got: every forwarded packet, minus send failures."""
        deadline = time.monotonic() + WAIT
        expected = (
            self.stats.packets_forwarded
            - len(self.out.outgoing)
            - self.stats.dropped["send_failed"]
        )
        got = 0
        while got < expected:
            ready, _, _ = select.select(self.subs, [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"{expected - got} forwarded datagrams never arrived"
            for i, sub in enumerate(self.subs):
                while True:
                    try:
                        self.out.sent[i].append(sub.recv(65536))
                    except BlockingIOError:
                        break
            got = sum(map(len, self.out.sent))
        assert got == expected, f"{got} datagrams arrived, {expected} forwarded"

    def run(self, steps: list[Step]) -> Outcome:
        now = 1000.0
        for step in steps:
            if step.kind == "send":
                (self.stray if step.stray else self.pub).sendto(step.data, self.sfu_addr)
                self.pending += 1
                if self.pending >= 64:
                    self.drain(now)
            elif step.kind == "forward":
                self.forwarder.forward([*self.layers, self.audio][step.index], step.data, now)
            elif step.kind == "target":
                self.sinks[step.index].selector.set_target(step.value)
            elif step.kind == "mute":
                self.audio.quiet_above = step.value
            elif step.kind in ("codec", "dd"):
                for layer in self.layers:
                    setattr(layer, "codec" if step.kind == "codec" else "dd_id", step.value)
            elif step.kind in ("spatial", "temporal"):
                setattr(self.sinks[step.index], f"{step.kind}_target", step.value)
            elif step.kind == "drain":
                self.drain(now)
            else:
                now += step.value / 256
        self.drain(now)
        self.collect()
        self._check_headers()
        s = self.stats
        self.out.state = {
            "stats": (s.packets_in, s.packets_forwarded, s.bytes_forwarded),
            "dropped": {k: v for k, v in s.dropped.items() if v},
            "sinks": [
                (
                    k.packets,
                    k.octets,
                    k.selector.current,
                    k.selector.target,
                    k.rewriter.last_sequence,
                    k.rewriter.last_timestamp,
                    k.spatial,
                    k.temporal,
                )
                for k in self.sinks
            ],
            "sources": [
                (x.base_seq, x.max_seq, x.cycles, x.received, x.octets_window, x.last_packet)
                for x in [*self.layers, self.audio]
            ],
            "history": [list(layer.history) for layer in self.layers],
            "last_seen": self.link.last_seen,
        }
        return self.out

    def _check_headers(self) -> None:
        """Every packet out carries its sink's SSRC, payload type and extension."""
        packets = [(f"sub{i}", d) for i, sent in enumerate(self.out.sent) for d in sent]
        packets += self.out.outgoing
        by_ssrc = {sink.ssrc: sink for sink in self.sinks}
        for owner, data in packets:
            assert len(data) >= 12 and data[0] >> 6 == 2 and not data[0] & 0x0F
            sink = by_ssrc[struct.unpack_from("!I", data, 8)[0]]
            assert sink.link.owner == owner and data[1] & 0x7F == sink.pt
            ext_id = sink.abs_send_time_id if sink.abs_send_time_id >= 0 else -1
            if ext_id >= 0 or data[0] & 0x10:
                assert data[12:16] == b"\xbe\xde\x00\x01", data[:20].hex()
                assert data[16] >> 4 in (ext_id, sink.audio_level_id)


def one_input(data: bytes) -> None:
    if not data:
        return
    config = data[0]
    profile = CM if config & 1 else GCM
    client = fastpath.Session(bytes(range(1, 1 + KEY_LENGTH[profile])), profile, True)
    steps = list(_steps(data, client))
    native_world = World(fastpath.fp, config)
    native = native_world.run(steps)
    if fastpath.NATIVE and not any(s.valid and len(s.data) > TWIN_LIMIT for s in steps):
        twin_world = World(_fastpath_py, config)
        twin = twin_world.run(steps)
        if native_world.split or twin_world.split:
            return  # datagrams read in other batches: Python learns NEW_SSRC at other times
        assert native.state == twin.state, (native.state, twin.state)
        assert native.sent == twin.sent
        assert native.raw == twin.raw
        assert native.received == twin.received
        assert native.outgoing == twin.outgoing
        assert native.levels == twin.levels


TARGET = Target("sfu_native", one_input, (), max_len=8192)
