"""The SFU's forwarding path, native (``_fastpath.c``, libsrtp2) and pure Python
(``_fastpath_py.py``, pylibsrtp), fed the same recorded SRTP traffic over real loopback
sockets: every datagram out, every packet handed to Python, every counter and every
piece of state left behind must be identical. The traffic has simulcast switches (on
keyframes only), RTX and an unknown SSRC (handed to Python decrypted), padding, an SSRC
change learnt by Python, a subscriber without a UDP path (handed to Python), audio
levels, transport-wide sequence numbers (wrapping) with their send-time records, and
malformed, unauthenticated, RTCP, STUN and stray datagrams."""

from __future__ import annotations

import itertools
import select
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

import pylibsrtp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visavis.protocol.rtp import keyframes
from visavis.protocol.rtp.av1 import parse_dependency_descriptor
from visavis.protocol.rtp.extensions import find_extension
from visavis.sfu import _fastpath_py
from visavis.sfu.stats import SfuStats

try:
    from visavis.sfu import _fastpath as native
except ImportError:  # CI builds it: a skip there is a failure
    native = None

needs_native = pytest.mark.skipif(native is None, reason="native SFU fast path not built")

GCM = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM
CM = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80


def pub_key(profile: int) -> bytes:
    """Master key + salt: 28 bytes for AES-GCM, 30 for AES-CM."""
    return bytes(range(1, 29 if profile == GCM else 31))


def sub_key(profile: int, i: int) -> bytes:
    return bytes(range(40 + i, 68 + i + (0 if profile == GCM else 2)))


SSRC_AUDIO, SSRC_RTX, SSRC_NEW = 2000, 1100, 1003
TWCC_ID = 9  # transport-wide-cc on subscribers 0 (wraps from 65530) and 2
RX_TWCC_ID = 2  # the publisher stamps its video (from 65533: wraps) with this id
SSRC_LAYERS = (1000, 1001, 1002)


def rtp(
    ssrc: int,
    seq: int,
    ts: int,
    payload: bytes,
    *,
    pt: int = 96,
    marker: bool = False,
    ext: bytes = b"",
    padding: int = 0,
    csrcs: int = 0,
) -> bytes:
    first = 0x80 | (0x10 if ext else 0) | (0x20 if padding else 0) | csrcs
    head = struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, seq, ts, ssrc)
    head += bytes(4 * csrcs)
    if ext:
        body = ext + bytes(-len(ext) % 4)
        head += struct.pack("!HH", 0xBEDE, len(body) // 4) + body
    pad = bytes(padding - 1) + bytes((padding,)) if padding else b""
    return head + payload + pad


def vp8(key: bool, n: int) -> bytes:
    return bytes((0x10, 0x00 if key else 0x01, 0x9D, 0x01, 0x2A)) + bytes((n % 256,)) * 40


def vp9(key: bool, n: int) -> bytes:
    """I, L, B, E (+V on keyframes, P on the others); picture id, layer byte, TL0PICIDX."""
    first = 0x80 | 0x20 | 0x08 | 0x04 | (0x02 if key else 0x40)
    return bytes((first, n % 128, 0x00, n % 256)) + bytes((n % 256,)) * 40


def h264(key: bool, n: int) -> bytes:
    """Keyframes: STAP-A of SPS and PPS; others: one non-IDR slice."""
    if key:
        return b"\x78\x00\x04\x67\x42\xe0\x1f\x00\x02\x68\xce" + bytes((n % 256,)) * 30
    return b"\x41\x9a" + bytes((n % 256,)) * 40


def av1(key: bool, n: int) -> bytes:
    """Aggregation header W=1 (+N on keyframes), then one OBU element."""
    return bytes((0x10 | (0x08 if key else 0),)) + bytes((n % 256,)) * 40


DD_ID = 6


def dependency_descriptor(key: bool, n: int) -> bytes:
    """Start and end of frame, template 0, frame n; keyframes attach a one-template
    structure (what WebRTC senders do): one-byte extension element with id DD_ID."""
    value = bytes((0xC0, n >> 8 & 0xFF, n & 0xFF))
    if key:
        value += bytes((0x80, 0x00, 0x03, 0x00, 0x00))  # structure: offset 0, 1 DT, L1T1
    return bytes(((DD_ID << 4) | (len(value) - 1),)) + value


def bits(*fields: tuple[int, int]) -> bytes:
    """(value, width) fields, most significant bit first, zero-padded to whole bytes."""
    value = width = 0
    for v, w in fields:
        value, width = value << w | v, width + w
    pad = -width % 8
    return (value << pad).to_bytes((width + pad) // 8, "big")


SVC_OFFSET = 62  # template ids 62, 63, 0, 1: wrap around 64


def svc_descriptor(key: bool, n: int, sid: int, tid: int) -> bytes:
    """An L2T2 dependency descriptor: templates S0T0, S0T1, S1T0, S1T1 from template id
    SVC_OFFSET; keyframes (spatial layer 0) attach that structure (4 decode targets, no
    fdiffs, no chains, no resolutions). One-byte extension element, id DD_ID."""
    template = (SVC_OFFSET + 2 * sid + tid) % 64
    fields = [(1, 1), (1, 1), (template, 6), (n, 16)]
    if key and sid == 0:
        fields += [(1, 1), (0, 4), (SVC_OFFSET, 6), (3, 5)]  # present; offset; 4 DTs
        fields += [(1, 2), (2, 2), (1, 2), (3, 2)]  # layers: +T, +S, +T, end
        fields += [(0, 2 * 4 * 4), (0, 4), (0, 2), (0, 1)]  # dtis; fdiffs; chains; res.
    value = bits(*fields)
    return bytes(((DD_ID << 4) | (len(value) - 1),)) + value


def vp9_svc(key: bool, n: int, sid: int) -> bytes:
    """One spatial layer's packet of an L3 picture (B and E: one packet per layer)."""
    first = 0x80 | 0x20 | 0x08 | 0x04 | (0x02 if key and sid == 0 else 0) | (0 if key else 0x40)
    return bytes((first, n % 128, (sid << 1) | (1 if sid else 0), n % 256)) + bytes((sid,)) * 30


def vp8_tl(key: bool, n: int) -> bytes:
    """VP8 with three temporal layers (TID 0, 2, 1, 2, ...): X, S; T; TID byte; tag."""
    tid = (0, 2, 1, 2)[n % 4]
    head = bytes((0x90, 0x20, (tid << 6) | (0x20 if tid else 0)))
    return head + bytes((0x00 if key else 0x01, 0x9D, 0x01, 0x2A)) + bytes((n % 256,)) * 40


PAYLOADS = {
    "vp8": vp8,
    "vp8-tl": vp8_tl,
    "vp9": vp9,
    "vp9-svc": vp9,
    "h264": h264,
    "av1": av1,
    "av1-dd": av1,
    "av1-svc": av1,
}
CODEC_IDS = {
    "vp8": 0,
    "vp8-tl": 0,
    "vp9": 1,
    "vp9-svc": 1,
    "h264": 2,
    "av1": 3,
    "av1-dd": 3,
    "av1-svc": 3,
}
DD_CODECS = ("av1-dd", "av1-svc")
SUB_DD_ID = 12  # subscribers 0 and 2 get the dependency descriptor (AV1) with this id


@dataclass
class Step:
    """One datagram to send to the SFU (from ``source``) and what to do before it."""

    data: bytes
    now: float
    source: str = "pub"  # or "stray"
    targets: dict[int, int] = field(default_factory=dict)  # sink index -> new target
    spatial: dict[int, int] = field(default_factory=dict)  # sink index -> spatial target
    temporal: dict[int, int] = field(default_factory=dict)  # sink index -> temporal target
    quiet_above: int | None = None  # set on the audio source (muted: voice only)


def recorded_traffic(profile: int, codec: str = "vp8") -> list[Step]:
    """The publisher's datagrams, SRTP-protected once (the same bytes for both runs)."""
    tx = pylibsrtp.Session(
        pylibsrtp.Policy(
            key=pub_key(profile), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile
        )
    )
    steps: list[Step] = []
    now = 100.0
    seqs = {s: 1000 * (i + 1) for i, s in enumerate((*SSRC_LAYERS, SSRC_AUDIO, SSRC_RTX))}
    seqs[SSRC_NEW] = 65530  # wraps
    transport_seq = 65533

    def send(ssrc: int, payload: bytes, **kw: Any) -> None:
        nonlocal now, transport_seq
        now += 0.003
        seq = seqs[ssrc]
        seqs[ssrc] = (seq + 1) & 0xFFFF
        clock = 48000 if ssrc == SSRC_AUDIO else 90000
        if ssrc in SSRC_LAYERS and "ext" in kw:  # transport-wide seq after the RID
            lost = transport_seq % 7 == 3  # one in seven lost
            stamp = (transport_seq + 1) & 0xFFFF if lost else transport_seq
            kw["ext"] = kw["ext"] + bytes(((RX_TWCC_ID << 4) | 1,)) + struct.pack("!H", stamp)
            transport_seq = (stamp + 1) & 0xFFFF
        steps.append(Step(tx.protect(rtp(ssrc, seq, int(now * clock), payload, **kw)), now))

    video = PAYLOADS[codec]

    def dd(key: bool, frame: int) -> bytes:
        if codec == "av1-svc":
            return svc_descriptor(key, frame, 0, frame % 2)
        return dependency_descriptor(key, frame) if codec == "av1-dd" else b""

    for frame in range(24):
        key = frame % 8 == 0
        for layer, ssrc in enumerate(SSRC_LAYERS):
            if layer == 0 or frame % 2 == 0 or key:
                rid = b"\x40" + bytes((ord("qhf"[layer]),))
                if codec == "vp9-svc":  # three spatial layers in each stream
                    for sid in range(3):
                        send(ssrc, vp9_svc(key, frame, sid), marker=sid == 2, ext=rid)
                elif codec == "av1-svc":  # two spatial, two temporal layers (L2T2)
                    for sid in range(2):
                        ext = rid + svc_descriptor(key, 2 * frame + sid, sid, frame % 2)
                        send(ssrc, av1(key and sid == 0, frame), marker=sid == 1, ext=ext)
                else:
                    send(ssrc, video(key, frame), marker=True, ext=rid + dd(key, frame))
        level = 10 if frame % 3 else 90
        send(SSRC_AUDIO, bytes(30), pt=111, ext=bytes((0x10, 0x80 | level)))
        if frame == 5:
            send(SSRC_RTX, video(False, frame))  # publisher RTX: an SSRC with no source
            send(SSRC_LAYERS[2], b"", padding=200)  # padding-only packet
        if frame == 9:
            steps[-1].targets = {0: 0, 1: 2}  # simulcast switches, taken on keyframes
        if frame == 3:
            steps[-1].spatial = {0: 0, 2: 1}  # VP9 SVC: fewer spatial layers, at once
        if frame == 11:
            steps[-1].spatial = {0: 7}  # all again: at the next keyframe (16)
        if frame == 4:
            steps[-1].temporal = {2: 0}  # the base frame rate only, at once
        if frame == 13:
            steps[-1].temporal = {2: 7}  # all again: at the next keyframe (16)
        if frame == 15:
            steps[-1].quiet_above = 50  # audio no longer among the loudest: voice only
        if frame == 21:
            steps[-1].quiet_above = -1
        if frame == 12:
            send(SSRC_NEW, video(True, frame), ext=dd(True, frame))  # SSRC changes (learnt)
            send(SSRC_LAYERS[1], video(False, frame), ext=b"\x40h\x10\x00" + dd(False, frame))
            send(SSRC_LAYERS[0], video(False, frame), csrcs=2)
        if frame == 6 and codec == "av1-svc":  # malformed descriptors: dropped, counted
            bad_template = bytes(((DD_ID << 4) | 2,)) + bits((3, 2), (10, 6), (0, 16))
            send(SSRC_LAYERS[0], av1(False, frame), ext=b"\x40q" + bad_template)
            send(SSRC_LAYERS[0], av1(False, frame), ext=b"\x40q" + bytes((DD_ID << 4 | 1, 0, 0)))
        if frame == 14:
            steps.append(Step(b"\x80\x60" + bytes(60), now))  # fails SRTP auth
            steps.append(Step(tx.protect_rtcp(struct.pack("!BBHI", 0x80, 201, 1, 1)), now))
            steps.append(Step(b"\x00\x01\x00\x00" + bytes(16), now))  # STUN-looking
            steps.append(Step(b"\x80\x60" + bytes(30), now, source="stray"))  # unknown address
            steps.append(Step(b"\x17\xfe\xfd" + bytes(20), now))  # DTLS-looking
    return steps


@dataclass
class Outcome:
    sent: list[tuple[int, bytes]] = field(default_factory=list)  # (subscriber, datagram)
    raw: list[bytes] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)
    outgoing: list[bytes] = field(default_factory=list)
    levels: list[tuple[int, float]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    segmented: int = 0  # datagrams that left inside a UDP_SEGMENT send
    gso: int = 0  # the native forwarder's switch at the end (the twin has none: 0)


def udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def run(
    fp: Any, steps: list[Step], profile: int = GCM, codec: str = "vp8", batch: int = 1, gso: int = 1
) -> Outcome:
    """Play ``steps`` through ``fp``'s Forwarder, ``batch`` datagrams per drain."""
    out = Outcome()
    sfu, pub, stray = udp(), udp(), udp()
    subs = [udp() for _ in range(2)]
    stats = SfuStats()
    links: dict[Any, Any] = {}
    pub_link = fp.Link("publisher")
    pub_link.rx = fp.Session(pub_key(profile), profile, False)
    pub_link.rx_twcc_id = RX_TWCC_ID
    links[fp.link_key(*pub.getsockname())] = pub_link

    def on_slow(raw: Any, received: Any, outgoing: Any, now: float) -> None:
        out.raw += [data for data, _ in raw or ()]
        out.outgoing += [data for _, data in outgoing or ()]
        for link, plain in received or ():
            assert link is pub_link
            out.received.append(plain)
            if struct.unpack_from("!I", plain, 8)[0] == SSRC_NEW:  # Python learns it
                link.sources[SSRC_NEW] = layers[0]
                forwarder.forward(layers[0], plain, now)

    forwarder = fp.Forwarder(sfu, links, stats, on_slow)
    if fp is native:
        forwarder.gso = gso
    video_sinks: list[Any] = []
    audio_sinks: list[Any] = []
    layers = [
        fp.Source(i, True, -1, [None] * 64, video_sinks, None) for i in range(len(SSRC_LAYERS))
    ]
    audio = fp.Source(0, False, 1, None, audio_sinks, lambda lv, t: out.levels.append((lv, t)))
    for ssrc, layer in zip(SSRC_LAYERS, layers, strict=True):
        pub_link.sources[ssrc] = layer
        layer.codec = CODEC_IDS[codec]
        layer.dd_id = DD_ID if codec in DD_CODECS else -1
    pub_link.sources[SSRC_AUDIO] = audio
    sub_links = []
    for i in range(3):
        link = fp.Link(f"sub{i}")
        link.tx = fp.Session(sub_key(profile, i), profile, True)
        if i < len(subs):  # the last one has no UDP path: its packets go to Python
            assert link.set_destination(*subs[i].getsockname())
        sub_links.append(link)
        video_sinks.append(
            fp.Sink(
                link,
                0x11110000 + i,
                100 + i,
                3 if i != 1 else -1,
                -1,
                fp.Rewriter(90000, initial_seq=65500 + i, initial_ts=0xFFFFF000 + i),
                fp.Selector(target=2 - i),
            )
        )
        if codec in DD_CODECS and i != 1:
            video_sinks[-1].dd_id = SUB_DD_ID
        rewriter = fp.Rewriter(48000, initial_seq=300 * i, initial_ts=7 * i)
        rewriter.switch(0)
        audio_sinks.append(
            fp.Sink(link, 0x22220000 + i, 111, -1, 5 if i else -1, rewriter, fp.Selector())
        )
    assert not sub_links[2].set_destination("::1", 5)  # not IPv4: stays with Python
    sub_links[0].twcc_id = sub_links[2].twcc_id = TWCC_ID
    sub_links[0].twcc_seq = 65530
    try:
        for first in range(0, len(steps), batch):
            for step in steps[first : first + batch]:
                for index, target in step.targets.items():
                    video_sinks[index].selector.set_target(target)
                for index, target in step.spatial.items():
                    video_sinks[index].spatial_target = target
                for index, target in step.temporal.items():
                    video_sinks[index].temporal_target = target
                if step.quiet_above is not None:
                    audio.quiet_above = step.quiet_above
                (stray if step.source == "stray" else pub).sendto(step.data, sfu.getsockname())
            assert select.select([sfu], [], [], 5)[0], "datagram did not arrive"
            forwarder.drain(step.now)
            for i, sub in enumerate(subs):
                while True:
                    try:
                        out.sent.append((i, sub.recv(4096)))
                    except BlockingIOError:
                        break
        out.state = {
            "stats": (stats.packets_in, stats.packets_forwarded, stats.bytes_forwarded),
            "dropped": {k: v for k, v in stats.dropped.items() if v},
            "sinks": [
                (s.packets, s.octets, s.selector.current, s.selector.target)
                for s in video_sinks + audio_sinks
            ],
            "spatial": [(s.spatial, s.spatial_target) for s in video_sinks],
            "temporal": [(s.temporal, s.temporal_target) for s in video_sinks],
            "lookup": [
                [s.rewriter.lookup((s.rewriter.last_sequence - k) & 0xFFFF) for k in range(40)]
                for s in video_sinks + audio_sinks
            ],
            "ts_offsets": [s.rewriter.timestamp_offset() for s in video_sinks + audio_sinks],
            "sources": [
                (s.base_seq, s.max_seq, s.cycles, s.received, s.octets_window, s.last_packet)
                for s in [*layers, audio]
            ],
            "dd_templates": [templates(layer) for layer in layers],
            "history": [list(layer.history) for layer in layers],
            "rx_twcc": (
                pub_link.rx_twcc_base,
                pub_link.rx_twcc_max,
                pub_link.arrivals(pub_link.rx_twcc_base, pub_link.rx_twcc_max),
            ),
            "twcc": [
                (link.twcc_id, link.twcc_seq, [link.sent(s & 0xFFFF) for s in range(65500, 66000)])
                for link in sub_links
            ],
            "last_seen": pub_link.last_seen,
        }
        out.segmented = stats.segmented_datagrams
        out.gso = forwarder.gso
    finally:
        for s in (sfu, pub, stray, *subs):
            s.close()
    return out


def templates(source: Any) -> int:
    """Templates of a source's dependency descriptor structure in force (0: none)."""
    if hasattr(source, "dd_templates"):  # native
        return int(source.dd_templates)
    structure = source.dd_structure
    return 0 if structure is None else len(structure.spatial_ids)


def payload_at(packet: bytes) -> int:
    """Where an outgoing packet's payload starts (after its one extension block)."""
    return 16 + 4 * struct.unpack_from("!H", packet, 14)[0] if packet[0] & 0x10 else 12


@needs_native
@pytest.mark.parametrize("codec", list(PAYLOADS))
@pytest.mark.parametrize("profile", [GCM, CM], ids=["aes-gcm", "aes-cm-hmac"])
def test_native_and_python_produce_the_same_bytes(profile: int, codec: str) -> None:
    steps = recorded_traffic(profile, codec)
    py = run(_fastpath_py, steps, profile, codec)
    nat = run(native, steps, profile, codec)
    assert nat.state == py.state
    assert nat.sent == py.sent
    assert nat.raw == py.raw
    assert nat.received == py.received
    assert nat.outgoing == py.outgoing
    assert nat.levels == py.levels
    # Transport-wide sequence numbers: every packet to the TWCC links, consecutive, each
    # remembered with its send time and size; none on the other link.
    stamps = [find_extension(p, TWCC_ID) for p in py.outgoing]
    assert [struct.unpack("!H", v)[0] for v in stamps if v] == list(range(len(py.outgoing)))
    twcc = py.state["twcc"]
    assert twcc[2][1] == len(py.outgoing) and twcc[1][:2] == (-1, 0)
    assert 0 < twcc[0][1] < 1000 and twcc[0][2][30] is not None  # from 65530, wrapped
    assert twcc[2][2][36][1] == len(py.outgoing[0])  # seq 0 (index 36 of 65500..): its size
    assert all(sent is None for sent in twcc[1][2])
    # The publisher's transport-wide seqs: noted on arrival, extended past the wrap.
    base, top, arrived = py.state["rx_twcc"]
    assert base == 65533 and top > 65536 and len(arrived) == top - base + 1
    assert arrived.count(None) == len([e for e in range(base, top + 1) if e % 0x10000 % 7 == 3])
    assert arrived.count(None) > 0
    # ... and the outcome is the forwarding we mean, not an empty agreement:
    stats = py.state["stats"]
    dropped = py.state["dropped"]
    assert stats[1] == len(py.sent) + len(py.outgoing) > 100 and len(py.outgoing) > 20
    if codec == "av1-svc":  # the two malformed descriptors
        assert dropped == {"srtp_auth": 1, "malformed_rtp": 2}
    else:
        assert dropped == {"srtp_auth": 1}  # libsrtp refuses malformed headers itself
    assert len(py.raw) == 4  # RTCP, STUN, the stray address, DTLS
    assert {struct.unpack_from("!I", p, 8)[0] for p in py.received} == {SSRC_RTX, SSRC_NEW}
    assert [s[2] for s in py.state["sinks"][:3]] == [0, 2, 0]  # switched on keyframes
    if codec == "vp9-svc":
        # sink 2 (no UDP path: its plain packets are in `outgoing`) was limited to
        # spatial layer 1: SID 2 stops, and SID 1 packets end the picture (marker)
        assert py.state["spatial"] == [(7, 7), (7, 7), (1, 1)]
        video = [p for p in py.outgoing if p[1] & 0x7F == 102]
        sids = [(p[payload_at(p) + 2] >> 1) & 7 for p in video]  # the layer byte
        assert 2 in sids[:6] and 2 not in sids[-30:] and 1 in sids[-30:]
        assert all(p[1] & 0x80 for p, sid in zip(video[-30:], sids[-30:], strict=True) if sid == 1)
    if codec == "vp8-tl":
        # sink 2 (plain packets in `outgoing`) got only TID 0 from frame 5 to the
        # keyframe at 16, then every layer again; its sequence has no gap
        assert py.state["temporal"] == [(7, 7), (7, 7), (7, 7)]
        video = [p for p in py.outgoing if p[1] & 0x7F == 102]
        tids = [p[payload_at(p) + 2] >> 6 for p in video]
        assert tids[:5] == [0, 2, 1, 2, 0]  # frames 0-4
        assert tids[-8:] == [0, 2, 1, 2, 0, 2, 1, 2]  # frames 16-23
        assert len(tids) > 14 and set(tids[5:-8]) == {0}  # frames 8 and 12 only
        seqs = [int.from_bytes(p[2:4], "big") for p in video]
        assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))  # no hole
    if codec == "av1-svc":
        check_av1_svc(py)
    assert len(py.levels) == 24 and {lv for lv, _ in py.levels} == {10, 90}
    # Muted for frames 15-20: their quiet packets (level 90: frames 15, 18) went nowhere.
    audio_packets = py.state["sinks"][3][0]
    assert audio_packets == 24 - 2


def check_av1_svc(py: Outcome) -> None:
    """Sink 0 was limited to spatial layer 0 from frame 3 to the keyframe at 16, sink 2
    to temporal layer 0 from frame 4 to 16; both got the publisher's descriptors
    unchanged (two-byte elements); layers read through the keyframe's structure."""
    assert py.state["dd_templates"] == [4, 4, 4]
    assert py.state["spatial"] == [(7, 7), (7, 7), (1, 1)]  # sink 2's 1: all of L2
    structure = None
    layers: dict[int, list[tuple[int, int, bool]]] = {0: [], 2: []}
    streams = [(0, p) for i, p in py.sent if i == 0] + [(2, p) for p in py.outgoing]
    for sink, packet in streams:
        if packet[1] & 0x7F != 100 + sink:
            continue
        value = find_extension(packet, SUB_DD_ID)
        if value is None:  # frame 12's packet with CSRCs and no descriptor
            assert packet[0] & 0x0F == 0 and packet[12:14] == b"\xbe\xde"
            continue
        assert packet[12:14] == b"\x10\x00"  # two-byte elements
        assert find_extension(packet, DD_ID) is None
        d = parse_dependency_descriptor(value, structure)
        structure = d.structure or structure
        assert d.spatial_id is not None and d.temporal_id is not None
        sent = svc_descriptor(d.structure is not None, d.frame_number, d.spatial_id, d.temporal_id)
        assert value == sent[1:]  # as the publisher sent it
        layers[sink].append((d.spatial_id, d.temporal_id, bool(packet[1] & 0x80)))
    # sink 0 (simulcast layer 2: even frames): both spatial layers until the limit at
    # frame 3, then layer 0 alone, each packet ending the picture (marker), until its
    # switch to simulcast layer 0 on frame 12's keyframe brings every layer back
    full = [(0, 0, False), (1, 0, True), (0, 1, False), (1, 1, True)]
    sink0 = layers[0]
    assert sink0[:6] == full[:2] * 3 and sink0[6:11] == [(0, 0, True)] * 5
    assert sink0[-8:] == full * 2
    # sink 2 (simulcast layer 0): temporal layer 0 alone from frame 4 to the keyframe
    sink2 = layers[2]
    assert sink2[:8] == full * 2 and sink2[8:22] == full[:2] * 7 and sink2[-8:] == full * 2


@needs_native
@pytest.mark.parametrize("codec", ["vp8", "vp9-svc"])
def test_segmented_sends_deliver_the_same_datagrams(codec: str) -> None:
    """Drains of 16 datagrams: the native path sends each subscriber's run of equal-sized
    datagrams as one UDP_SEGMENT send, and every subscriber receives exactly what the
    twin (one send per datagram) and the native path with segmentation off deliver."""
    steps = recorded_traffic(GCM, codec)
    py = run(_fastpath_py, steps, GCM, codec, batch=16)
    seg = run(native, steps, GCM, codec, batch=16)
    alone = run(native, steps, GCM, codec, batch=16, gso=0)
    for out in (seg, alone):
        assert out.state == py.state
        assert out.sent == py.sent
        assert (out.raw, out.received, out.outgoing) == (py.raw, py.received, py.outgoing)
    assert py.segmented == alone.segmented == 0
    assert len(py.sent) > 50 and seg.segmented > len(py.sent) // 2


def frames(size: int) -> list[Step]:
    """Video frames of four ``size``-byte datagrams on every simulcast layer (keyframe
    every fourth frame), each frame followed by an audio packet."""
    tx = pylibsrtp.Session(
        pylibsrtp.Policy(
            key=pub_key(GCM), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=GCM
        )
    )
    steps, seq = [], 0
    for frame in range(12):
        for layer, ssrc in enumerate(SSRC_LAYERS):
            rid = b"\x40" + bytes((ord("qhf"[layer]),))
            for k in range(4):
                body = vp8(frame % 4 == 0, frame)
                body += bytes(size - 12 - 4 - len(rid) - 2 - len(body) - 16)  # + ext + tag
                packet = rtp(ssrc, seq, frame * 3000, body, marker=k == 3, ext=rid)
                steps.append(Step(tx.protect(packet), 100.0 + frame / 30))
                seq += 1
        steps.append(Step(tx.protect(rtp(SSRC_AUDIO, frame, frame * 960, bytes(30), pt=111)), 0))
        steps[-1].now = steps[-2].now
    return steps


def gso_probe() -> None:
    """Run inside a namespace whose loopback MTU is 1,000 (``test_segmented_sends_fall_
    back_where_the_route_refuses``): prints, per datagram size, what each path did."""
    import json

    report = {}
    for size in (700, 1200):
        steps = frames(size)
        py = run(_fastpath_py, steps, batch=16)
        nat = run(native, steps, batch=16)
        report[size] = {
            "same": nat.sent == py.sent and nat.state == py.state,
            "delivered": len(nat.sent),
            "segmented": nat.segmented,
            "gso_after": nat.gso,
        }
    print(json.dumps(report))


@needs_native
def test_segmented_sends_fall_back_where_the_route_refuses() -> None:
    """A route whose MTU is below a group's datagrams refuses the segmented send
    (EINVAL): the forwarder sends that group's datagrams one by one, stops segmenting, and
    every subscriber still receives exactly what the twin delivers. Smaller datagrams on
    the same route are segmented."""
    import json
    import sys

    from tests import netns

    why = netns.available()
    if why is not None:
        pytest.skip(why)
    with netns.Namespace() as ns:
        netns._sh("ip", "-n", ns.name, "link", "set", "lo", "mtu", "1000")
        code = "from tests.sfu.test_sfu_fastpath import gso_probe; gso_probe()"
        done = ns.run([sys.executable, "-c", code])
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    small, big = report["700"], report["1200"]
    assert small["same"] and small["segmented"] > small["delivered"] // 2 and small["gso_after"]
    assert big["same"] and big["delivered"] > 50 and big["segmented"] == 0
    assert big["gso_after"] == 0  # turned off by the refusal


def socketless(fp: Any) -> tuple[Any, SfuStats, list[bytes]]:
    """A Forwarder without a socket (every packet it forwards is handed back as plain
    RTP), its stats and the list those packets land in."""
    stats = SfuStats()
    outgoing: list[bytes] = []

    def on_slow(raw: Any, received: Any, out: Any, now: float) -> None:
        outgoing.extend(data for _, data in out or ())

    return fp.Forwarder(None, {}, stats, on_slow), stats, outgoing


@needs_native
@settings(max_examples=300, deadline=None)
@given(
    head=st.binary(min_size=12, max_size=40),
    body=st.binary(max_size=80),
    level_id=st.integers(-1, 15),
    codec=st.integers(0, 4),
    dd_id=st.integers(-1, 15),
    limits=st.tuples(st.integers(0, 7), st.integers(0, 7)),
    twcc_id=st.sampled_from([-1, 4, 14]),
)
def test_arbitrary_plain_packets_same_outcome_no_crash(
    head: bytes,
    body: bytes,
    level_id: int,
    codec: int,
    dd_id: int,
    limits: tuple[int, int],
    twcc_id: int,
) -> None:
    """Whatever a (decrypted) packet's header claims (CSRC count, extension length,
    padding, keyframe bits of any codec, a dependency descriptor, VP8/VP9 layer indices
    under spatial and temporal limits), both paths agree, count malformed ones and never
    crash."""
    results = []
    for fp in (_fastpath_py, native):
        forwarder, stats, outgoing = socketless(fp)
        link = fp.Link("sub")
        link.twcc_id = twcc_id
        sinks = [
            fp.Sink(link, 5, 96, 2, -1, fp.Rewriter(90000), fp.Selector(target=0)),
            fp.Sink(link, 6, 97, -1, 3, fp.Rewriter(90000), fp.Selector(target=1)),
        ]
        levels: list[Any] = []

        def on_level(level: int, now: float, levels: list[Any] = levels) -> None:
            levels.append(level)

        source = fp.Source(0, True, level_id, [None] * 8, sinks, on_level)
        source.codec, source.dd_id = codec, dd_id
        sinks[0].spatial_target, sinks[0].temporal_target = limits
        sinks[0].spatial, sinks[0].temporal = 7 - limits[0], 7 - limits[1]
        forwarder.forward(source, head + body, 1.0)
        limited = (sinks[0].spatial, sinks[0].temporal)
        sent = [link.sent(s) for s in range(4)]
        results.append(
            (outgoing, levels, dict(stats.dropped), stats.packets_forwarded, limited, sent)
        )
    assert results[0] == results[1]


def _mutated(value: bytes, cut: int, flips: list[int]) -> bytes:
    data = bytearray(value[: len(value) - cut] if cut < len(value) else value)
    for bit in flips:
        if data:
            data[bit // 8 % len(data)] ^= 0x80 >> bit % 8
    return bytes(data)


@needs_native
@settings(max_examples=300, deadline=None)
@given(
    descriptors=st.lists(
        st.tuples(
            st.booleans(),
            st.integers(0, 3),
            st.integers(0, 6),
            st.lists(st.integers(0, 255), max_size=3),
        )
        | st.binary(max_size=24),
        min_size=1,
        max_size=5,
    ),
    limits=st.tuples(st.integers(0, 7), st.integers(0, 7)),
    sink_dd=st.sampled_from([-1, 12, 200]),
)
def test_dependency_descriptors_same_outcome(
    descriptors: list[Any], limits: tuple[int, int], sink_dd: int
) -> None:
    """AV1 packets whose dependency descriptors (two-byte elements) are valid, cut short,
    bit-flipped or random, in a row (a keyframe's structure stays for the next ones):
    both paths keep the same structure, drop and count the same malformed ones, and send
    the same bytes under spatial and temporal limits."""
    values = []
    for item in descriptors:
        if isinstance(item, bytes):
            values.append(item)
        else:
            key, layer, cut, flips = item
            valid = svc_descriptor(key, 7, layer >> 1, layer & 1)[1:]
            values.append(_mutated(valid, cut, flips))
    results = []
    for fp in (_fastpath_py, native):
        forwarder, stats, outgoing = socketless(fp)
        link = fp.Link("sub")
        link.twcc_id = 4
        sinks = [fp.Sink(link, 5, 96, 2, -1, fp.Rewriter(90000), fp.Selector(target=0))]
        sinks[0].dd_id = sink_dd
        sinks[0].spatial_target, sinks[0].temporal_target = limits
        source = fp.Source(0, True, -1, [None] * 8, sinks, None)
        source.codec, source.dd_id = 3, DD_ID
        state = []
        for seq, value in enumerate(values):
            element = bytes((DD_ID, len(value))) + value
            ext = element + bytes(-len(element) % 4)
            head = struct.pack("!BBHII", 0x90, 45, seq, 3000 * seq, 77)
            head += struct.pack("!HH", 0x1000, len(ext) // 4) + ext
            forwarder.forward(source, head + av1(seq == 0, seq), 1.0 + seq)
            state.append((templates(source), sinks[0].spatial, sinks[0].temporal))
        results.append((outgoing, dict(stats.dropped), stats.packets_forwarded, state))
    assert results[0] == results[1]


def test_session_rejects_bad_keys_and_bad_packets() -> None:
    for fp in [_fastpath_py] + ([native] if native is not None else []):
        with pytest.raises((ValueError, fp.SrtpError)):
            fp.Session(b"short", GCM, True)
        rx = fp.Session(pub_key(GCM), GCM, False)
        with pytest.raises(fp.SrtpError):
            rx.unprotect(b"\x80\x60" + bytes(40))
        with pytest.raises(fp.SrtpError):
            rx.unprotect_rtcp(b"\x80\xc9" + bytes(40))


@needs_native
@settings(max_examples=500, deadline=None)
@given(
    codec=st.integers(0, 4),
    payload=st.binary(max_size=24),
    dd=st.none() | st.binary(max_size=8),
)
def test_native_keyframe_test_is_the_python_one(
    codec: int, payload: bytes, dd: bytes | None
) -> None:
    """The C table of keyframe tests answers as visavis.protocol.rtp.keyframes does."""
    assert native.is_keyframe(codec, payload, dd) == keyframes.is_keyframe(codec, payload, dd)
