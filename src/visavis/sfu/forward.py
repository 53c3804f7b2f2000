"""The per-packet path: from one publisher's decrypted RTP to every subscriber.

This module is deliberately small and flat (no per-packet objects, one loop) so that it
can be measured and later replaced by native code without touching the control path in
:mod:`visavis.sfu.room`. ``benchmarks/sfu_forwarding.py`` measures it.

For each subscriber of the producer: the simulcast selector decides (video), the
subscriber's rewriter maps sequence number and timestamp, a new header is written with
the subscriber's SSRC, payload type and header extensions (abs-send-time for its
bandwidth estimator, audio level copied), and the untouched payload follows. The SRTP
protection and the send are the transport's.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from visavis.protocol.rtp.extensions import abs_send_time, find_extension
from visavis.protocol.rtp.vp8 import is_vp8_keyframe
from visavis.sfu.simulcast import Decision

if TYPE_CHECKING:
    from visavis.sfu.room import Consumer, Layer, Producer, Room

_HEADER = struct.Struct("!BBHII")
_SEQ_TS = struct.Struct("!HI")
_U16 = struct.Struct("!H")


def _payload_offset(data: bytes) -> int:
    pos = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        pos += 4 + 4 * _U16.unpack_from(data, pos + 2)[0]
    return pos


def forward_rtp(room: Room, producer: Producer, layer: Layer, data: bytes, now: float) -> None:
    """Record one packet of ``layer`` and send it to each subscriber that wants it."""
    seq, ts = _SEQ_TS.unpack_from(data, 2)
    size = len(data)
    # Reception statistics (RFC 3550 A.1) and bitrate.
    if layer.base_seq is None:
        layer.base_seq = layer.max_seq = seq
    elif 0 < ((seq - layer.max_seq) & 0xFFFF) < 0x8000:
        if seq < layer.max_seq:
            layer.cycles += 1 << 16
        layer.max_seq = seq
    layer.received += 1
    layer.octets_window += size
    layer.last_packet = now
    offset = _payload_offset(data)
    if offset > size:
        room.stats.drop("malformed_rtp")
        return
    history = layer.history
    if history is not None:
        history[seq % len(history)] = data
    level = None
    if producer.audio_level_id is not None:
        value = find_extension(data, producer.audio_level_id)
        if value:
            level = value[0]
            room.speaker.observe(producer.participant.id, level & 0x7F, now)
    payload = data[offset:]
    flags = 0x80 | (data[0] & 0x20)
    marker = data[1] & 0x80
    keyframe: bool | None = None
    index = layer.index
    stats = room.stats
    for consumer in producer.consumers:
        if producer.is_video:
            selector = consumer.selector
            if not (index == selector.current == selector.target):
                if keyframe is None:
                    keyframe = is_vp8_keyframe(payload)
                decision = selector.decide(index, keyframe)
                if decision is Decision.DROP:
                    continue
                if decision is Decision.SWITCH:
                    consumer.rewriter.switch(index)
        mapped = consumer.rewriter.rewrite(seq, ts, now)
        if mapped is None:
            continue
        packet = _build(consumer, flags, marker, mapped[0], mapped[1], level, now) + payload
        consumer.transport.send_rtp(packet)
        consumer.packets += 1
        consumer.octets += len(payload)
        stats.packets_forwarded += 1
        stats.bytes_forwarded += len(packet)


def _build(
    consumer: Consumer, flags: int, marker: int, seq: int, ts: int, level: int | None, now: float
) -> bytes:
    if consumer.abs_send_time_id is not None:
        ext = bytes((0xBE, 0xDE, 0, 1, (consumer.abs_send_time_id << 4) | 2)) + abs_send_time(now)
        flags |= 0x10
    elif consumer.audio_level_id is not None and level is not None:
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
