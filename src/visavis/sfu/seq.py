"""Per-subscriber sequence number and timestamp rewriting (sans-I/O).

Theory of operation. A subscriber sees one outgoing stream per slot (SSRC chosen by the
SFU). What feeds it changes: a simulcast layer switch, or the source changing. Each
change starts a *segment*: the first packet of the new source is mapped onto
``last output + 1`` (sequence) and ``last output + elapsed ticks`` (timestamp), so the
subscriber's jitter buffer sees one continuous stream. Within a segment the mapping is a
constant offset, so reordered packets keep their order. Packets older than the start of
the current segment (stragglers of the previous layer) are dropped.

Packets of the current source that are not forwarded (VP9 spatial layers above the
subscriber's) would leave gaps the subscriber takes for loss: :meth:`skip` makes the next
forwarded packet start a segment that continues the output sequence (same source, same
timestamp offset).

The last few segments are remembered so a NACK for an output sequence number can be
mapped back to (source tag, input sequence number) and answered from that source's
packet history.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass

_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32


def seq_delta(a: int, b: int) -> int:
    """Signed distance a - b between 16-bit sequence numbers, in [-32768, 32767]."""
    d = (a - b) & 0xFFFF
    return d - _SEQ_MOD if d >= 0x8000 else d


@dataclass(slots=True)
class Segment:
    """A run of output packets fed by one source with constant offsets."""

    tag: Hashable
    in_start: int
    out_start: int
    seq_offset: int
    ts_offset: int


class SequenceRewriter:
    """Maps the selected source's (seq, timestamp) onto one continuous output stream.

    Call :meth:`switch` when the source changes (new layer or publisher), then
    :meth:`rewrite` for each packet of the selected source.
    """

    def __init__(
        self, clock_rate: int, *, initial_seq: int = 0, initial_ts: int = 0, history: int = 16
    ) -> None:
        self.clock_rate = clock_rate
        self._last_out_seq = (initial_seq - 1) & 0xFFFF
        self._last_out_ts = initial_ts & 0xFFFFFFFF
        self._last_out_time: float | None = None
        self._highest_in = 0
        self._segments: deque[Segment] = deque(maxlen=history)
        self._pending_tag: Hashable | None = None
        self._pending = True
        self._skip_pending = False

    @property
    def last_sequence(self) -> int:
        """The highest output sequence number sent so far."""
        return self._last_out_seq

    @property
    def last_timestamp(self) -> int:
        """The output timestamp of the newest packet sent so far."""
        return self._last_out_ts

    def switch(self, tag: Hashable) -> None:
        """The next packet passed to :meth:`rewrite` comes from the new source ``tag``."""
        self._pending = True
        self._pending_tag = tag

    def skip(self, seq: int) -> None:
        """Input packet ``seq`` of the current source is not forwarded (a spatial layer
        above the subscriber's): the next packet forwarded continues the output sequence
        without a gap, in a new segment with the same source and timestamp offset."""
        if self._pending or not self._segments or seq_delta(seq, self._highest_in) <= 0:
            return
        self._highest_in = seq
        self._skip_pending = True

    def rewrite(self, seq: int, ts: int, now: float) -> tuple[int, int] | None:
        """Return the output (seq, timestamp) of an input packet, or None to drop it."""
        if self._skip_pending and not self._pending and seq_delta(seq, self._highest_in) > 0:
            self._skip_pending = False
            last = self._segments[-1]
            out_seq = (self._last_out_seq + 1) & 0xFFFF
            out_ts = (ts + last.ts_offset) & 0xFFFFFFFF
            self._segments.append(
                Segment(last.tag, seq, out_seq, (out_seq - seq) & 0xFFFF, last.ts_offset)
            )
            self._highest_in = seq
            self._last_out_seq = out_seq
            self._last_out_ts = out_ts
            self._last_out_time = now
            return out_seq, out_ts
        if self._pending:
            self._pending = False
            self._skip_pending = False
            gap = 1
            if self._last_out_time is not None:
                gap = max(1, round((now - self._last_out_time) * self.clock_rate))
            out_seq = (self._last_out_seq + 1) & 0xFFFF
            out_ts = (self._last_out_ts + gap) & 0xFFFFFFFF
            self._segments.append(
                Segment(
                    self._pending_tag,
                    seq,
                    out_seq,
                    (out_seq - seq) & 0xFFFF,
                    (out_ts - ts) & 0xFFFFFFFF,
                )
            )
            self._highest_in = seq
            self._last_out_seq = out_seq
            self._last_out_ts = out_ts
            self._last_out_time = now
            return out_seq, out_ts
        segment = self._segments[-1]
        if seq_delta(seq, segment.in_start) < 0:
            return None
        out_seq = (seq + segment.seq_offset) & 0xFFFF
        out_ts = (ts + segment.ts_offset) & 0xFFFFFFFF
        if seq_delta(seq, self._highest_in) > 0:
            self._highest_in = seq
            self._last_out_seq = out_seq
            self._last_out_ts = out_ts
            self._last_out_time = now
        return out_seq, out_ts

    def timestamp_offset(self) -> int | None:
        """The current segment's timestamp offset (for rewriting sender reports)."""
        return self._segments[-1].ts_offset if self._segments else None

    def lookup(self, out_seq: int) -> tuple[Hashable, int, int] | None:
        """Map an output sequence number to (source tag, input seq, timestamp offset)."""
        for index in range(len(self._segments) - 1, -1, -1):
            segment = self._segments[index]
            if seq_delta(out_seq, segment.out_start) >= 0:
                if seq_delta(out_seq, self._last_out_seq) > 0:
                    return None
                if index + 1 < len(self._segments):
                    nxt = self._segments[index + 1]
                    if seq_delta(out_seq, nxt.out_start) >= 0:
                        return None
                return segment.tag, (out_seq - segment.seq_offset) & 0xFFFF, segment.ts_offset
        return None
