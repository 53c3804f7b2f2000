"""Retransmissions, both ways: NACKs answered to subscribers, NACKs sent to publishers.

The forwarding itself is the fast path's (:mod:`visavis.sfu.fastpath`: native
``_fastpath.c`` or its twin ``_fastpath_py.py``). Loss repair is rare and needs the
rewriter's segment table, so it happens here, in Python, from the history the fast path
fills:

- *Subscribers*: a NACK is answered as RTX (RFC 4588) when negotiated, else as the
  original packet with the subscriber's header (the same header the fast path writes,
  with the transport-wide sequence number when TWCC is negotiated). The same RTX
  packets, of the most recent history, are the probe traffic of :mod:`visavis.sfu.gcc`.
- *Publishers*: each tick, the new part of every video layer's history is scanned for
  holes (:class:`LossTracker`); missing sequence numbers are NACKed (generic NACK,
  RFC 4585) up to ``RETRIES`` times; the publisher's RTX packets are unwrapped
  (:func:`unwrap_rtx`) and forwarded like late originals.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from visavis.protocol.rtp.extensions import abs_send_time, find_extension, serialize_extensions

if TYPE_CHECKING:
    from visavis.sfu.room import Consumer, Participant, Room

_HEADER = struct.Struct("!BBHII")
_U16 = struct.Struct("!H")
RETRIES = 3  # NACKs per lost packet towards a publisher
MAX_AGE = 1.0  # seconds after which a lost publisher packet is given up
MAX_SCAN = 512  # a bigger jump is a stream reset, not loss


def _payload_offset(data: bytes) -> int:
    """Where the payload starts; beyond ``len(data)`` when the header overruns it."""
    pos = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        if pos + 4 > len(data):
            return len(data) + 1
        pos += 4 + 4 * _U16.unpack_from(data, pos + 2)[0]
    return pos


def _header(
    consumer: Consumer,
    flags: int,
    second: int,
    seq: int,
    ts: int,
    ssrc: int,
    elements: dict[int, bytes],
    body: int,
    now: float,
) -> bytes:
    """RTP header with extension ``elements`` and, when the subscriber's transport
    negotiated TWCC, the next transport-wide sequence number (its send time and size
    remembered like the fast path's)."""
    link = consumer.link
    if link.twcc_id >= 0:
        size = len(serialize_extensions({**elements, link.twcc_id: b"\0\0"}))
        stamp = link.twcc_stamp(12 + size + body, now)
        elements = {**elements, link.twcc_id: _U16.pack(stamp)}
    ext = serialize_extensions(elements)
    if ext:
        flags |= 0x10
    return _HEADER.pack(flags, second, seq, ts, ssrc) + ext


def _retransmission(consumer: Consumer, out_seq: int, now: float) -> bytes | None:
    """The packet a subscriber knows as ``out_seq``, ready to send (RTX if negotiated),
    or None when it is no longer in the history."""
    producer = consumer.producer
    found = consumer.rewriter.lookup(out_seq)
    if found is None:
        return None
    tag, in_seq, ts_offset = found
    if not isinstance(tag, int) or tag >= len(producer.layers):
        return None
    history = producer.layers[tag].history
    if history is None:
        return None
    data = history[in_seq % len(history)]
    if data is None or _U16.unpack_from(data, 2)[0] != in_seq:
        return None
    ts = (struct.unpack_from("!I", data, 4)[0] + ts_offset) & 0xFFFFFFFF
    payload = data[_payload_offset(data) :]
    flags = 0x80 | (data[0] & 0x20)
    marker = data[1] & 0x80
    # AV1: the dependency descriptor goes along (the receiver places the frame by it)
    descriptor = None
    if consumer.dd_id >= 0 and producer.dd_id is not None:
        descriptor = find_extension(data, producer.dd_id)
    if consumer.rtx_pt is not None and consumer.rtx_ssrc is not None:
        consumer.rtx_seq = (consumer.rtx_seq + 1) & 0xFFFF
        body = _U16.pack(out_seq) + payload
        head = _header(
            consumer, flags, marker | consumer.rtx_pt, consumer.rtx_seq, ts, consumer.rtx_ssrc,
            {} if descriptor is None else {consumer.dd_id: descriptor}, len(body), now,
        )  # fmt: skip
        return head + body
    elements = {}
    if consumer.abs_send_time_id >= 0:
        elements[consumer.abs_send_time_id] = abs_send_time(now)
    if descriptor is not None:
        elements[consumer.dd_id] = descriptor
    head = _header(
        consumer, flags, marker | consumer.pt, out_seq, ts, consumer.ssrc, elements,
        len(payload), now,
    )  # fmt: skip
    return head + payload


def answer_nack(room: Room, consumer: Consumer, lost: tuple[int, ...], now: float) -> None:
    """Resend what a subscriber lost, from the producer's history (as RTX if negotiated)."""
    consumer.nack_tokens = min(200.0, consumer.nack_tokens + (now - consumer.nack_refilled) * 200)
    consumer.nack_refilled = now
    for out_seq in lost[:64]:
        if consumer.nack_tokens < 1:
            room.stats.drop("nack_rate_limited")
            return
        packet = _retransmission(consumer, out_seq, now)
        if packet is None:
            continue
        consumer.nack_tokens -= 1
        consumer.transport.send_rtp(packet)
        room.stats.nack_retransmissions += 1


def send_probe(room: Room, subscriber: Participant, budget: int, now: float) -> int:
    """Send about ``budget`` bytes of probe traffic to ``subscriber``: RTX copies of the
    most recent packets of its video slots (harmless duplicates for its jitter buffer).
    Returns the bytes sent (0 when no slot has RTX and history)."""
    consumers = [
        c
        for c in subscriber.consumers.values()
        if c.producer.is_video and c.rtx_pt is not None and c.selector.current is not None
    ]
    sent = 0
    back = 0
    while consumers and sent < budget and back < 64:
        progress = False
        for consumer in consumers:
            recent = (consumer.rewriter.last_sequence - back) & 0xFFFF
            packet = _retransmission(consumer, recent, now)
            if packet is None:
                continue
            consumer.transport.send_rtp(packet)
            sent += len(packet)
            room.stats.probe_packets += 1
            progress = True
            if sent >= budget:
                break
        back += 1
        if not progress and back > 8:
            break
    return sent


def unwrap_rtx(data: bytes, ssrc: int, pt: int) -> bytes | None:
    """The original packet inside an RTX packet (RFC 4588 s4): the header with the
    media SSRC and payload type and the original sequence number (the first two payload
    bytes); None for a padding-only packet (bandwidth probing)."""
    end = len(data)
    if data[0] & 0x20 and end:
        end -= data[-1]
    offset = _payload_offset(data)
    if offset + 2 > end:
        return None
    osn = _U16.unpack_from(data, offset)[0]
    header = bytearray(data[:offset])
    header[0] &= ~0x20 & 0xFF
    header[1] = (data[1] & 0x80) | (pt & 0x7F)
    struct.pack_into("!H", header, 2, osn)
    struct.pack_into("!I", header, 8, ssrc)
    return bytes(header) + data[offset + 2 : end]


class LossTracker:
    """Holes in one publisher layer's sequence numbers, found in the history the fast
    path fills (a slot holds the packet whose sequence number it was filled with)."""

    def __init__(self) -> None:
        self.scanned = -1  # extended sequence number scanned up to
        self.pending: dict[int, list[float]] = {}  # seq -> [first seen missing, NACKs sent]

    def due(
        self, history: list[bytes | None], first: int, extended_max: int, now: float
    ) -> list[int]:
        """Sequence numbers to NACK now (new holes since ``first``, the first sequence
        number received, and unanswered ones: ``RETRIES`` times at most, for ``MAX_AGE``
        seconds at most)."""
        size = len(history)
        if self.scanned < 0:
            self.scanned = first
        if not 0 <= extended_max - self.scanned <= MAX_SCAN:
            self.scanned = extended_max  # a jump (stream reset): start over
            self.pending.clear()
        for ext in range(self.scanned + 1, extended_max):
            self.pending[ext & 0xFFFF] = [now, 0]
        self.scanned = max(self.scanned, extended_max)
        due: list[int] = []
        for seq, entry in list(self.pending.items()):
            slot = history[seq % size]
            arrived = slot is not None and _U16.unpack_from(slot, 2)[0] == seq
            if arrived or entry[1] >= RETRIES or now - entry[0] > MAX_AGE:
                del self.pending[seq]
                continue
            entry[1] += 1
            due.append(seq)
        return due
