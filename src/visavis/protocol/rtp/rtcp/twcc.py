"""Transport-wide congestion control feedback: RTPFB FMT 15
(draft-holmer-rmcat-transport-wide-cc-extensions-01 s3.1).

A receiver reports, for a run of transport-wide sequence numbers starting at
``base_sequence``, which packets arrived and when: a 24-bit signed reference time in
64 ms units, then packet status chunks (run-length, or a vector of 1-bit or 2-bit
symbols) and one receive delta per received packet (1 byte unsigned for symbol 1,
2 bytes signed for symbol 2, in 250 µs units; the first relative to the reference
time, each later one to the previous received packet). :class:`RtcpTwcc` keeps the
wire's deltas; :meth:`RtcpTwcc.arrivals` turns them into times, :func:`build_twcc`
goes the other way.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from visavis.protocol.rtp.errors import RtcpError
from visavis.protocol.rtp.rtcp.header import PT_RTPFB, pack_header, unpack_header

FMT_TWCC = 15
DELTA_US = 250  # one receive-delta tick
REFERENCE_US = 64_000  # one reference-time tick

NOT_RECEIVED, SMALL, LARGE = 0, 1, 2
_MAX_RUN = 0x1FFF


def _symbol(delta: int | None) -> int:
    if delta is None:
        return NOT_RECEIVED
    return SMALL if 0 <= delta <= 0xFF else LARGE


@dataclass(frozen=True, slots=True)
class RtcpTwcc:
    """One feedback packet: ``deltas[i]`` is the receive delta (250 µs ticks) of
    sequence ``base_sequence + i``, None when it was not received."""

    sender_ssrc: int
    media_ssrc: int
    base_sequence: int
    reference_time: int  # signed, 64 ms ticks
    feedback_count: int
    deltas: tuple[int | None, ...]

    @property
    def status_count(self) -> int:
        return len(self.deltas)

    def arrivals(self) -> list[tuple[int, int | None]]:
        """(sequence number, arrival time in µs on the receiver's clock, or None)."""
        now = self.reference_time * REFERENCE_US
        out: list[tuple[int, int | None]] = []
        for i, delta in enumerate(self.deltas):
            seq = (self.base_sequence + i) & 0xFFFF
            if delta is None:
                out.append((seq, None))
            else:
                now += delta * DELTA_US
                out.append((seq, now))
        return out

    @classmethod
    def parse(cls, data: bytes) -> RtcpTwcc:
        fmt, packet_type, body = unpack_header(data)
        if packet_type != PT_RTPFB or fmt != FMT_TWCC or len(body) < 16:
            raise RtcpError("not a transport-wide CC feedback")
        sender, media, base, count, ref = struct.unpack_from("!IIHHI", body)
        reference = ref >> 8
        if reference & 0x800000:
            reference -= 0x1000000
        symbols: list[int] = []
        pos = 16
        while len(symbols) < count:
            if pos + 2 > len(body):
                raise RtcpError("TWCC status chunks truncated")
            chunk = struct.unpack_from("!H", body, pos)[0]
            pos += 2
            if not chunk & 0x8000:  # run length
                symbol, run = (chunk >> 13) & 3, chunk & _MAX_RUN
                if symbol == 3:
                    raise RtcpError("TWCC reserved status symbol")
                symbols += [symbol] * run
            elif not chunk & 0x4000:  # vector of 14 one-bit symbols
                symbols += [(chunk >> (13 - i)) & 1 for i in range(14)]
            else:  # vector of 7 two-bit symbols
                two = [(chunk >> (12 - 2 * i)) & 3 for i in range(7)]
                if 3 in two[: count - len(symbols)]:
                    raise RtcpError("TWCC reserved status symbol")
                symbols += two
        deltas: list[int | None] = []
        for symbol in symbols[:count]:
            if symbol == NOT_RECEIVED:
                deltas.append(None)
            elif symbol == SMALL:
                if pos + 1 > len(body):
                    raise RtcpError("TWCC receive deltas truncated")
                deltas.append(body[pos])
                pos += 1
            else:
                if pos + 2 > len(body):
                    raise RtcpError("TWCC receive deltas truncated")
                deltas.append(struct.unpack_from("!h", body, pos)[0])
                pos += 2
        return cls(sender, media, base, reference, ref & 0xFF, tuple(deltas))

    def serialize(self) -> bytes:
        symbols = [_symbol(d) for d in self.deltas]
        if not symbols:
            raise RtcpError("TWCC feedback must report at least one packet")
        body = bytearray(
            struct.pack(
                "!IIHHI",
                self.sender_ssrc,
                self.media_ssrc,
                self.base_sequence & 0xFFFF,
                len(symbols),
                (self.reference_time & 0xFFFFFF) << 8 | (self.feedback_count & 0xFF),
            )
        )
        for chunk in _chunks(symbols):
            body += struct.pack("!H", chunk)
        for delta, symbol in zip(self.deltas, symbols, strict=True):
            if symbol == SMALL:
                body.append(delta or 0)
            elif symbol == LARGE:
                assert delta is not None
                if not -0x8000 <= delta <= 0x7FFF:
                    raise RtcpError("TWCC receive delta does not fit 16 bits")
                body += struct.pack("!h", delta)
        body += bytes(-len(body) % 4)
        return pack_header(FMT_TWCC, PT_RTPFB, bytes(body))


def _chunks(symbols: list[int]) -> list[int]:
    """Status chunks for ``symbols``: a run-length chunk for runs of 7 or more (or the
    whole rest), else a 1-bit vector when the next 14 are 0/1, else a 2-bit vector."""
    chunks: list[int] = []
    i, n = 0, len(symbols)
    while i < n:
        run = 1
        while i + run < n and run < _MAX_RUN and symbols[i + run] == symbols[i]:
            run += 1
        if run >= 7 or i + run == n:
            chunks.append(symbols[i] << 13 | run)
            i += run
        elif max(symbols[i : i + 14]) <= SMALL:
            window = symbols[i : i + 14] + [0] * (14 - len(symbols[i : i + 14]))
            chunks.append(0x8000 | sum(s << (13 - k) for k, s in enumerate(window)))
            i += 14
        else:
            window = symbols[i : i + 7] + [0] * (7 - len(symbols[i : i + 7]))
            chunks.append(0xC000 | sum(s << (12 - 2 * k) for k, s in enumerate(window)))
            i += 7
    return chunks


def build_twcc(
    sender_ssrc: int,
    media_ssrc: int,
    base_sequence: int,
    arrivals_us: Sequence[int | None],
    feedback_count: int,
) -> RtcpTwcc:
    """Feedback for ``arrivals_us[i]`` (µs, receiver clock; None: lost) of sequence
    ``base_sequence + i``; the reference time is the first arrival rounded down to 64 ms.
    Raise :class:`RtcpError` when a gap between arrivals does not fit a 16-bit delta
    (the caller starts a new feedback there)."""
    first = next((a for a in arrivals_us if a is not None), None)
    if first is None:
        raise RtcpError("TWCC feedback needs at least one received packet")
    reference = first // REFERENCE_US
    previous = reference * DELTA_US * (REFERENCE_US // DELTA_US)
    deltas: list[int | None] = []
    for arrival in arrivals_us:
        if arrival is None:
            deltas.append(None)
            continue
        ticks = (arrival - previous) // DELTA_US
        if not -0x8000 <= ticks <= 0x7FFF:
            raise RtcpError("TWCC receive delta does not fit 16 bits")
        deltas.append(ticks)
        previous += ticks * DELTA_US
    signed = reference & 0xFFFFFF
    if signed & 0x800000:
        signed -= 0x1000000
    return RtcpTwcc(sender_ssrc, media_ssrc, base_sequence, signed, feedback_count, tuple(deltas))
