"""Retransmissions for subscribers: NACK answered from a layer's history.

The forwarding itself is the fast path's (:mod:`visavis.sfu.fastpath`: native
``_fastpath.c`` or its twin ``_fastpath_py.py``). A NACK is rare and needs the rewriter's
segment table, so it is answered here, in Python, from the history the fast path fills:
as RTX (RFC 4588) when negotiated, else as the original packet with the subscriber's
header (the same header the fast path writes).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from visavis.protocol.rtp.extensions import abs_send_time

if TYPE_CHECKING:
    from visavis.sfu.room import Consumer, Room

_HEADER = struct.Struct("!BBHII")
_U16 = struct.Struct("!H")


def _payload_offset(data: bytes) -> int:
    pos = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        pos += 4 + 4 * _U16.unpack_from(data, pos + 2)[0]
    return pos


def _build(
    consumer: Consumer, flags: int, marker: int, seq: int, ts: int, level: int | None, now: float
) -> bytes:
    if consumer.abs_send_time_id >= 0:
        ext = bytes((0xBE, 0xDE, 0, 1, (consumer.abs_send_time_id << 4) | 2)) + abs_send_time(now)
        flags |= 0x10
    elif consumer.audio_level_id >= 0 and level is not None:
        ext = bytes((0xBE, 0xDE, 0, 1, consumer.audio_level_id << 4, level, 0, 0))
        flags |= 0x10
    else:
        ext = b""
    return _HEADER.pack(flags, marker | consumer.pt, seq, ts, consumer.ssrc) + ext


def answer_nack(room: Room, consumer: Consumer, lost: tuple[int, ...], now: float) -> None:
    """Resend what a subscriber lost, from the producer's history (as RTX if negotiated)."""
    producer = consumer.producer
    consumer.nack_tokens = min(200.0, consumer.nack_tokens + (now - consumer.nack_refilled) * 200)
    consumer.nack_refilled = now
    for out_seq in lost[:64]:
        if consumer.nack_tokens < 1:
            room.stats.drop("nack_rate_limited")
            return
        found = consumer.rewriter.lookup(out_seq)
        if found is None:
            continue
        tag, in_seq, ts_offset = found
        if not isinstance(tag, int) or tag >= len(producer.layers):
            continue
        history = producer.layers[tag].history
        if history is None:
            continue
        data = history[in_seq % len(history)]
        if data is None or _U16.unpack_from(data, 2)[0] != in_seq:
            continue
        consumer.nack_tokens -= 1
        ts = (struct.unpack_from("!I", data, 4)[0] + ts_offset) & 0xFFFFFFFF
        payload = data[_payload_offset(data) :]
        flags = 0x80 | (data[0] & 0x20)
        if consumer.rtx_pt is not None and consumer.rtx_ssrc is not None:
            consumer.rtx_seq = (consumer.rtx_seq + 1) & 0xFFFF
            packet = (
                _HEADER.pack(
                    flags,
                    (data[1] & 0x80) | consumer.rtx_pt,
                    consumer.rtx_seq,
                    ts,
                    consumer.rtx_ssrc,
                )
                + _U16.pack(out_seq)
                + payload
            )
        else:
            packet = _build(consumer, flags, data[1] & 0x80, out_seq, ts, None, now) + payload
        consumer.transport.send_rtp(packet)
        room.stats.nack_retransmissions += 1
