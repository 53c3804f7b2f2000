"""VP8 RTP payload descriptor (RFC 7741 s4.2): just enough to find keyframes.

The descriptor and the first byte of the VP8 payload header stay in the clear under
SFrame-style end-to-end encryption of the frame body, so the SFU can gate layer switches
on keyframes without seeing the picture.
"""

from __future__ import annotations


def is_vp8_keyframe(payload: bytes) -> bool:
    """True if this RTP payload starts a VP8 keyframe (S=1, PID=0, P bit of frame tag 0)."""
    n = len(payload)
    if n < 1:
        return False
    first = payload[0]
    if not first & 0x10 or first & 0x07:  # S bit, partition index 0
        return False
    pos = 1
    if first & 0x80:  # X: extension byte follows
        if n < 2:
            return False
        ext = payload[1]
        pos = 2
        if ext & 0x80:  # I: picture id
            if n <= pos:
                return False
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            pos += 1
        if ext & 0x30:  # T or K: TID/KEYIDX byte
            pos += 1
    if n <= pos:
        return False
    return not payload[pos] & 0x01


def vp8_temporal_id(payload: bytes) -> int | None:
    """The TID of a VP8 packet (0 without the T bit), or None if the descriptor is
    truncated: the temporal layer an SFU drops for a subscriber that wants fewer frames."""
    n = len(payload)
    if n < 1:
        return None
    if not payload[0] & 0x80:
        return 0
    if n < 2:
        return None
    ext = payload[1]
    pos = 2
    if ext & 0x80:  # I: picture id
        if n <= pos:
            return None
        pos += 2 if payload[pos] & 0x80 else 1
    if ext & 0x40:  # L: TL0PICIDX
        pos += 1
    if not ext & 0x20:  # T: no temporal layer index
        return 0
    if n <= pos:
        return None
    return payload[pos] >> 6
