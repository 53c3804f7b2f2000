"""RTP packets (RFC 3550) and header extensions (RFC 8285) as the SFU reads them.

After :meth:`RtpPacket.parse` accepts a packet, the fast-path helpers the SFU runs on
accepted packets (extension lookup, payload offset, VP8 keyframe test, audio level, MID
and RID values) must not fail either, and the packet must survive serialize -> parse with
its fields unchanged.
"""

from __future__ import annotations

import contextlib

from fuzz.contract import Target
from visavis.protocol.rtp import RtpError, RtpPacket
from visavis.protocol.rtp.extensions import (
    find_extension,
    parse_abs_send_time,
    parse_audio_level,
    parse_sdes_item,
)
from visavis.protocol.rtp.packet import payload_offset, sequence_of, ssrc_of
from visavis.protocol.rtp.vp8 import is_vp8_keyframe


def one_input(data: bytes) -> None:
    packet = RtpPacket.parse(data)
    assert ssrc_of(data) == packet.ssrc and sequence_of(data) == packet.sequence_number
    assert payload_offset(data) <= len(data)
    is_vp8_keyframe(packet.payload)
    for ext_id in range(1, 15):
        find_extension(data, ext_id)
    for value in packet.extensions.values():
        for decode in (parse_audio_level, parse_abs_send_time, parse_sdes_item):
            with contextlib.suppress(RtpError):
                decode(value)
    try:
        wire = packet.serialize()
    except RtpError:
        return  # an extension the one- and two-byte forms cannot carry
    again = RtpPacket.parse(wire)
    assert (again.payload_type, again.sequence_number, again.timestamp, again.ssrc) == (
        packet.payload_type,
        packet.sequence_number,
        packet.timestamp,
        packet.ssrc,
    )
    assert (again.marker, again.csrcs, again.payload) == (
        packet.marker,
        packet.csrcs,
        packet.payload,
    )


TARGET = Target("rtp", one_input, (RtpError,), max_len=1500)
