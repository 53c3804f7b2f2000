"""Pure-Python twin of the SFU's native forwarding path (``_fastpath.c``).

Same interface and the same bytes out (``tests/sfu/test_sfu_fastpath.py`` feeds both
the same recorded traffic and compares every datagram): :class:`Forwarder` reads the
media socket (``drain``), decrypts RTP from known links, forwards packets of known
sources to their sinks and hands the rest to ``on_slow(raw, received, outgoing, now)``.
SRTP is pylibsrtp here and ``_srtp.c`` (OpenSSL) in C; the rewriter and selector are the
Python classes of :mod:`visavis.sfu.seq` and :mod:`visavis.sfu.simulcast`.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import pylibsrtp

from visavis.protocol.rtp.av1 import TemplateStructure, parse_dependency_descriptor
from visavis.protocol.rtp.errors import RtpError
from visavis.protocol.rtp.extensions import abs_send_time, find_extension
from visavis.protocol.rtp.keyframes import (
    LayerInfo,
    VideoCodec,
    dd_layer_info,
    is_keyframe,
    layer_info,
)
from visavis.protocol.rtp.vp8 import is_vp8_keyframe
from visavis.sfu.seq import SequenceRewriter as Rewriter
from visavis.sfu.simulcast import Decision
from visavis.sfu.simulcast import LayerSelector as Selector

__all__ = [
    "NATIVE",
    "PROFILE_AEAD_AES_128_GCM",
    "PROFILE_AES128_CM_SHA1_80",
    "Forwarder",
    "Link",
    "Rewriter",
    "Selector",
    "Session",
    "Sink",
    "Source",
    "SrtpError",
    "is_keyframe",
    "is_vp8_keyframe",
    "link_key",
]

NATIVE = 0
PROFILE_AES128_CM_SHA1_80 = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
PROFILE_AEAD_AES_128_GCM = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM
RECVSZ = 4096
TWCC_RING = 4096  # packets whose send time a link remembers (transport-wide CC)

_SEQ_TS = struct.Struct("!HI")
_HEADER = struct.Struct("!BBHII")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")

Addr = tuple[str, int]
_LAYERED = (VideoCodec.VP8, VideoCodec.VP9, VideoCodec.AV1)  # packets say their layers
_TALLY = ("packets_in", "forwarded", "bytes", "srtp_auth", "malformed", "send_failed", "garbage")


class SrtpError(Exception):
    """SRTP authentication, replay or parameter failure."""


class Session:
    """One direction of SRTP for one transport."""

    def __init__(self, key: bytes, profile: int, outbound: bool) -> None:
        ssrc_type = (
            pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
        )
        try:
            policy = pylibsrtp.Policy(key=key, ssrc_type=ssrc_type, srtp_profile=profile)
            policy.allow_repeat_tx = True  # NACK answers resend a sequence number already sent
            policy.window_size = 1024
            self._session = pylibsrtp.Session(policy)
        except pylibsrtp.Error as exc:
            raise SrtpError(str(exc)) from exc

    # pylibsrtp works in a fixed 1,500-byte buffer and raises ValueError for a longer
    # packet: an SRTP failure like any other here (the native Session takes up to
    # RECVSZ + 64 bytes), or one large datagram would escape the drain and lose the batch.

    def protect(self, data: bytes) -> bytes:
        try:
            return self._session.protect(data)
        except (pylibsrtp.Error, ValueError) as exc:
            raise SrtpError(str(exc)) from exc

    def unprotect(self, data: bytes) -> bytes:
        try:
            return self._session.unprotect(data)
        except (pylibsrtp.Error, ValueError) as exc:
            raise SrtpError(str(exc)) from exc

    def protect_rtcp(self, data: bytes) -> bytes:
        try:
            return self._session.protect_rtcp(data)
        except (pylibsrtp.Error, ValueError) as exc:
            raise SrtpError(str(exc)) from exc

    def unprotect_rtcp(self, data: bytes) -> bytes:
        try:
            return self._session.unprotect_rtcp(data)
        except (pylibsrtp.Error, ValueError) as exc:
            raise SrtpError(str(exc)) from exc


class Link:
    """One transport's SRTP sessions, UDP destination and sources by SSRC; with
    transport-wide CC, its next transport-wide sequence number and the send time and
    size of the last ``TWCC_RING`` packets, and the arrival time of the client's last
    ``TWCC_RING`` transport-wide sequence numbers (extended: no wrap)."""

    __slots__ = (
        "_arrived", "_rx_twcc_id", "_sent", "_twcc_id", "_twcc_seq", "destination", "last_seen",
        "owner", "rx", "rx_twcc_base", "rx_twcc_max", "sources", "tx",
    )  # fmt: skip

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self.rx: Session | None = None
        self.tx: Session | None = None
        self.sources: dict[int, Source] = {}
        self.last_seen = 0.0
        self.destination: Addr | None = None
        self._twcc_id = -1
        self._twcc_seq = 0
        self._sent: list[tuple[int, float, int] | None] | None = None
        self._rx_twcc_id = -1
        self.rx_twcc_max = -1  # highest extended transport-wide seq received
        self.rx_twcc_base = -1  # the first one
        self._arrived: list[tuple[int, float] | None] | None = None

    @property
    def rx_twcc_id(self) -> int:
        """The transport-wide-cc id of the client's packets (arrivals noted), -1: none."""
        return self._rx_twcc_id

    @rx_twcc_id.setter
    def rx_twcc_id(self, value: int) -> None:
        if value > 255 or value < -1 or value == 0:
            raise ValueError("rx_twcc_id must be 1-255 or -1")
        if value >= 0 and self._arrived is None:
            self._arrived = [None] * TWCC_RING
        self._rx_twcc_id = value

    def twcc_received(self, plain: bytes, now: float) -> None:
        """Note when the client's packet ``plain`` (decrypted RTP) arrived, by its
        transport-wide sequence number (the fast path does this for what it reads)."""
        if self._rx_twcc_id < 0 or len(plain) < 12 or self._arrived is None:
            return
        value = find_extension(plain, self._rx_twcc_id)
        if value is None or len(value) != 2:
            return
        seq = _U16.unpack(value)[0]
        if self.rx_twcc_max < 0:
            ext = self.rx_twcc_max = self.rx_twcc_base = seq
        else:
            delta = (seq - self.rx_twcc_max) & 0xFFFF
            ext = self.rx_twcc_max + (delta - 0x10000 if delta >= 0x8000 else delta)
            if ext < 0:
                return
            self.rx_twcc_max = max(self.rx_twcc_max, ext)
        self._arrived[ext % TWCC_RING] = (ext, now)

    def arrivals(self, first: int, last: int) -> list[float | None]:
        """Arrival times of extended transport-wide ``first`` .. ``last`` (None: not
        received, or forgotten)."""
        if last < first or last - first >= TWCC_RING:
            raise ValueError("arrivals(first, last): at most TWCC_RING, in order")
        out: list[float | None] = []
        for ext in range(first, last + 1):
            entry = self._arrived[ext % TWCC_RING] if self._arrived and ext >= 0 else None
            out.append(entry[1] if entry is not None and entry[0] == ext else None)
        return out

    @property
    def twcc_id(self) -> int:
        """The transport-wide-cc extension id written on every packet, -1: none."""
        return self._twcc_id

    @twcc_id.setter
    def twcc_id(self, value: int) -> None:
        if value > 14 or value < -1 or value == 0:
            raise ValueError("twcc_id must be 1-14 or -1")  # one-byte header extensions
        if value >= 0 and self._sent is None:
            self._sent = [None] * TWCC_RING
        self._twcc_id = value

    @property
    def twcc_seq(self) -> int:
        """The next transport-wide sequence number."""
        return self._twcc_seq

    @twcc_seq.setter
    def twcc_seq(self, value: int) -> None:
        self._twcc_seq = value & 0xFFFF

    def twcc_stamp(self, size: int, now: float) -> int:
        """Take the next transport-wide sequence number for a packet of ``size`` bytes
        sent at ``now``, remembering both (for :meth:`sent`)."""
        seq = self._twcc_seq
        self._twcc_seq = (seq + 1) & 0xFFFF
        if self._sent is not None:
            self._sent[seq % TWCC_RING] = (seq, now, max(size, 0))
        return seq

    def sent(self, seq: int) -> tuple[float, int] | None:
        """(send time, size) of transport-wide ``seq`` if still remembered."""
        seq &= 0xFFFF
        entry = self._sent[seq % TWCC_RING] if self._sent is not None else None
        if entry is None or entry[0] != seq:
            return None
        return entry[1], entry[2]

    def set_destination(self, host: str, port: int) -> bool:
        if link_key(host, port) is None:
            self.destination = None
            return False
        self.destination = (host, port)
        return True

    def clear_destination(self) -> None:
        self.destination = None


class Source:
    """One producer layer: reception statistics, NACK history, its sinks."""

    def __init__(
        self,
        index: int,
        is_video: bool,
        audio_level_id: int,
        history: list[bytes | None] | None,
        sinks: list[Any],
        on_level: Callable[[int, float], object] | None,
    ) -> None:
        if history is not None and not history:
            raise TypeError("history must be a non-empty list or None")
        self.index = index
        self.is_video = bool(is_video)
        self.audio_level_id = audio_level_id
        self.history = history
        self.sinks = sinks
        self.on_level = on_level
        self.quiet_above = -1  # muted audio: drop packets quieter than this (-dBov)
        self.codec = 0  # video: a keyframes.VideoCodec (how keyframes are found)
        self.dd_id = -1  # dependency descriptor extension id, -1: none
        self.dd_structure: TemplateStructure | None = None  # AV1: the last keyframe's
        self.base_seq = -1
        self.max_seq = 0
        self.cycles = 0
        self.received = 0
        self.octets_window = 0
        self.last_packet = -1e9


class Sink:
    """One consumer: where and how a source's packets go to one subscriber."""

    def __init__(
        self,
        link: Link,
        ssrc: int,
        pt: int,
        abs_send_time_id: int,
        audio_level_id: int,
        rewriter: Rewriter,
        selector: Selector,
    ) -> None:
        self.link = link
        self.ssrc = ssrc & 0xFFFFFFFF
        self.pt = pt & 0x7F
        self.abs_send_time_id = abs_send_time_id
        self.audio_level_id = audio_level_id
        self.rewriter = rewriter
        self.selector = selector
        self.packets = 0
        self.octets = 0
        self.spatial = 7  # VP9/AV1 SVC: highest spatial layer forwarded (7: all)
        self.spatial_target = 7  # wanted: up on a keyframe, down at a picture start
        self.temporal = 7  # VP8/VP9/AV1: highest temporal layer forwarded (7: all)
        self.temporal_target = 7
        self.dd_id = -1  # AV1: send the dependency descriptor with this id (two-byte form)


def link_key(host: str, port: int) -> object | None:
    """The key of ``links`` for a UDP source address; None if it is not IPv4."""
    try:
        socket.inet_pton(socket.AF_INET, host)
    except OSError:
        return None
    if not 0 <= port <= 0xFFFF:
        return None
    return (host, port)


def _payload_offset(data: bytes, size: int) -> int:
    pos = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        if pos + 4 > size:
            return -1
        pos += 4 + 4 * _U16.unpack_from(data, pos + 2)[0]
    return -1 if pos > size else pos


OnSlow = Callable[
    [list[tuple[bytes, Addr]] | None, list[tuple[Link, bytes]] | None, list[Any] | None, float],
    object,
]


def _two_byte_elements(
    sink: Sink, link: Link, level: int, abs_value: bytes, dd: bytes, body: int, now: float
) -> bytes:
    """The extension block of a packet that carries the dependency descriptor."""
    elements = b""
    if sink.abs_send_time_id >= 0:
        elements = bytes((sink.abs_send_time_id, 3)) + abs_value
    elif sink.audio_level_id >= 0 and level >= 0:
        elements = bytes((sink.audio_level_id, 1, level))
    tail = bytes((sink.dd_id, len(dd))) + dd
    twcc_id = link.twcc_id
    if twcc_id >= 0:
        size = len(elements) + 4 + len(tail)
        stamp = link.twcc_stamp(16 + size + (-size % 4) + body, now)
        elements += bytes((twcc_id, 2)) + _U16.pack(stamp)
    elements += tail
    elements += bytes(-len(elements) % 4)
    return b"\x10\x00" + _U16.pack(len(elements) // 4) + elements


class Forwarder:
    """The media port's per-packet path (see the module docstring)."""

    def __init__(
        self, sock: socket.socket | None, links: dict[Any, Link], stats: Any, on_slow: OnSlow
    ) -> None:
        self.sock = sock
        self.links = links
        self.stats = stats
        self.on_slow = on_slow
        self._buf = bytearray(RECVSZ)
        self._tally = dict.fromkeys(_TALLY, 0)
        self._outgoing: list[tuple[Link, bytes]] | None = None
        # The native path's segmented sends (UDP_SEGMENT): the twin sends every datagram
        # alone, which a receiver cannot tell apart; the switch is kept for the interface.
        self.gso = 0

    def drain(self, now: float = -1.0, budget: int = 256) -> None:
        """Read up to ``budget`` datagrams and forward them (the ``add_reader`` callback)."""
        if self.sock is None:
            raise ValueError("no socket")
        if now < 0:
            now = time.monotonic()
        tally = self._tally
        raw: list[tuple[bytes, Addr]] | None = None
        received: list[tuple[Link, bytes]] | None = None
        recv = self.sock.recvmsg_into
        buf = self._buf
        for _ in range(budget):
            try:
                n, _, flags, addr = recv([buf])
            except (BlockingIOError, InterruptedError):
                break
            if flags & socket.MSG_TRUNC or n == 0:
                tally["garbage"] += 1
                continue
            data = bytes(buf[:n])
            first = data[0]
            if 127 < first < 192 and n >= 2 and not 192 <= data[1] <= 223:
                key = link_key(addr[0], addr[1])
                link = self.links.get(key) if key is not None else None
                if link is not None and link.rx is not None:
                    try:
                        plain = link.rx.unprotect(data)
                    except SrtpError:
                        tally["srtp_auth"] += 1
                        continue
                    link.last_seen = now
                    tally["packets_in"] += 1
                    if len(plain) < 12:
                        tally["malformed"] += 1
                        continue
                    if link.rx_twcc_id >= 0:
                        link.twcc_received(plain, now)
                    source = link.sources.get(_U32.unpack_from(plain, 8)[0])
                    if source is not None:
                        self._forward(source, plain, now)
                    else:
                        if received is None:
                            received = []
                        received.append((link, plain))
                    continue
            if raw is None:
                raw = []
            raw.append((data, (addr[0], addr[1])))
        self._finish(raw, received, now)

    def forward(self, source: Source, plain: bytes, now: float) -> None:
        """Forward one decrypted RTP packet of ``source`` (one Python learnt itself)."""
        if len(plain) < 12:
            self._tally["malformed"] += 1
        elif len(plain) > RECVSZ:
            self._tally["garbage"] += 1
        else:
            self._forward(source, bytes(plain), now)
        self._finish(None, None, now)

    def _finish(
        self,
        raw: list[tuple[bytes, Addr]] | None,
        received: list[tuple[Link, bytes]] | None,
        now: float,
    ) -> None:
        outgoing, self._outgoing = self._outgoing, None
        t = self._tally
        stats = self.stats
        if t["packets_in"]:
            stats.packets_in += t["packets_in"]
        if t["forwarded"]:
            stats.packets_forwarded += t["forwarded"]
        if t["bytes"]:
            stats.bytes_forwarded += t["bytes"]
        for key, reason in (
            ("srtp_auth", "srtp_auth"),
            ("malformed", "malformed_rtp"),
            ("send_failed", "send_failed"),
            ("garbage", "garbage"),
        ):
            if t[key]:
                stats.drop(reason, t[key])
        for key in t:
            t[key] = 0
        if raw is not None or received is not None or outgoing is not None:
            self.on_slow(raw, received, outgoing, now)

    def _forward(self, source: Source, data: bytes, now: float) -> None:
        seq, ts = _SEQ_TS.unpack_from(data, 2)
        size = len(data)
        if source.base_seq < 0:
            source.base_seq = source.max_seq = seq
        elif 0 < ((seq - source.max_seq) & 0xFFFF) < 0x8000:
            if seq < source.max_seq:
                source.cycles += 1 << 16
            source.max_seq = seq
        source.received += 1
        source.octets_window += size
        source.last_packet = now
        tally = self._tally
        offset = _payload_offset(data, size)
        if offset < 0:
            tally["malformed"] += 1
            return
        info: LayerInfo | None = None  # parsed once, for sinks with layer limits
        info_parsed = False
        dd = find_extension(data, source.dd_id) if source.dd_id >= 0 else None
        if dd is not None and source.codec == VideoCodec.AV1:
            # AV1's layers come from the dependency descriptor, which keeps the source's
            # template structure up to date; a malformed one drops the packet.
            try:
                descriptor = parse_dependency_descriptor(dd, source.dd_structure)
            except RtpError:
                tally["malformed"] += 1
                return
            if descriptor.structure is not None:
                source.dd_structure = descriptor.structure
            info = dd_layer_info(descriptor)
            info_parsed = True
        history = source.history
        if history is not None:
            history[seq % len(history)] = data
        level = -1
        if source.audio_level_id >= 0:
            value = find_extension(data, source.audio_level_id)
            if value:
                level = value[0]
                if source.on_level is not None:
                    source.on_level(level & 0x7F, now)
        if source.quiet_above >= 0 and (level < 0 or (level & 0x7F) > source.quiet_above):
            return
        payload = data[offset:]
        flags = 0x80 | (data[0] & 0x20)
        marker = data[1] & 0x80
        keyframe: bool | None = None
        index = source.index
        abs_value = abs_send_time(now)
        sock = self.sock
        for sink in source.sinks:
            if source.is_video:
                selector = sink.selector
                if not (index == selector.current == selector.target):
                    if keyframe is None:
                        keyframe = is_keyframe(source.codec, payload, dd)
                    decision = selector.decide(index, keyframe)
                    if decision is Decision.DROP:
                        continue
                    if decision is Decision.SWITCH:
                        sink.rewriter.switch(index)
            mark = marker
            if source.codec in _LAYERED and (
                sink.spatial < 7
                or sink.spatial_target < 7
                or sink.temporal < 7
                or sink.temporal_target < 7
            ):
                if not info_parsed:
                    info_parsed = True
                    info = layer_info(source.codec, payload)
                if info is not None:
                    if info.start:
                        if sink.spatial_target < sink.spatial or info.intra:
                            sink.spatial = sink.spatial_target
                        if sink.temporal_target < sink.temporal or info.intra:
                            sink.temporal = sink.temporal_target
                    if info.spatial > sink.spatial or info.temporal > sink.temporal:
                        sink.rewriter.skip(seq)
                        continue
                    if info.end and info.spatial == sink.spatial:
                        mark = 0x80
            mapped = sink.rewriter.rewrite(seq, ts, now)
            if mapped is None:
                continue
            link = sink.link
            # Extension elements: abs-send-time or audio level, then the transport-wide
            # sequence number, then (AV1) the dependency descriptor; zero padding to 32
            # bits. One-byte elements, or two-byte ones (RFC 8285 s4.3) in a packet that
            # carries the descriptor, which may be longer than 16 bytes.
            if sink.dd_id >= 0 and dd is not None:
                ext = _two_byte_elements(sink, link, level, abs_value, dd, len(payload), now)
                fl = flags | 0x10
            else:
                if sink.abs_send_time_id >= 0:
                    elements = bytes(((sink.abs_send_time_id << 4) | 2,)) + abs_value
                elif sink.audio_level_id >= 0 and level >= 0:
                    elements = bytes((sink.audio_level_id << 4, level))
                else:
                    elements = b""
                twcc_id = link.twcc_id
                if twcc_id >= 0:
                    words = (len(elements) + 6) // 4
                    stamp = link.twcc_stamp(16 + 4 * words + len(payload), now)
                    elements += bytes(((twcc_id << 4) | 1,)) + _U16.pack(stamp)
                fl = flags
                if elements:
                    elements += bytes(-len(elements) % 4)
                    ext = b"\xbe\xde" + _U16.pack(len(elements) // 4) + elements
                    fl |= 0x10
                else:
                    ext = b""
            packet = _HEADER.pack(fl, mark | sink.pt, mapped[0], mapped[1], sink.ssrc)
            packet += ext + payload
            if sock is not None and link.destination is not None:
                if link.tx is not None:
                    try:
                        sock.sendto(link.tx.protect(packet), link.destination)
                    except (SrtpError, OSError):
                        tally["send_failed"] += 1
            else:
                if self._outgoing is None:
                    self._outgoing = []
                self._outgoing.append((link, packet))
            sink.packets += 1
            sink.octets += len(payload)
            tally["forwarded"] += 1
            tally["bytes"] += len(packet)
