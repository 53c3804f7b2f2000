"""RTP header extensions (RFC 8285) and the values WebRTC puts in them.

The block after the fixed header is either one-byte (profile 0xBEDE, ids 1-14, values
1-16 bytes) or two-byte (profile 0x100x, ids 1-255, values 0-255 bytes). Values are kept
raw; the helpers below decode the ones the SFU reads: audio level (RFC 6464), SDES MID
and RID (RFC 8843, RFC 8852), absolute send time and transport-wide sequence number.
"""

from __future__ import annotations

import struct

from visavis.protocol.rtp.errors import RtpError

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
URI_REPAIRED_RID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_TRANSPORT_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"


def parse_extensions(profile: int, block: bytes) -> dict[int, bytes]:
    """Parse the data of an extension block (after profile and length) into id -> value."""
    out: dict[int, bytes] = {}
    pos = 0
    n = len(block)
    if profile == 0xBEDE:
        while pos < n:
            byte = block[pos]
            if byte == 0:
                pos += 1
                continue
            ext_id, length = byte >> 4, (byte & 0x0F) + 1
            if ext_id == 15:
                break
            if pos + 1 + length > n:
                raise RtpError(f"one-byte extension {ext_id} overruns the block")
            out[ext_id] = block[pos + 1 : pos + 1 + length]
            pos += 1 + length
    elif profile & 0xFFF0 == 0x1000:
        while pos < n:
            ext_id = block[pos]
            if ext_id == 0:
                pos += 1
                continue
            if pos + 2 > n:
                raise RtpError("two-byte extension header truncated")
            length = block[pos + 1]
            if pos + 2 + length > n:
                raise RtpError(f"two-byte extension {ext_id} overruns the block")
            out[ext_id] = block[pos + 2 : pos + 2 + length]
            pos += 2 + length
    # Other profiles are opaque to WebRTC: ignore them.
    return out


def serialize_extensions(extensions: dict[int, bytes]) -> bytes:
    """Encode id -> value as a complete block (profile, length, data, zero padding).

    Uses the one-byte form when every id is 1-14 and every value 1-16 bytes long,
    else the two-byte form.
    """
    if not extensions:
        return b""
    one_byte = all(1 <= i <= 14 and 1 <= len(v) <= 16 for i, v in extensions.items())
    parts = bytearray()
    if one_byte:
        for ext_id, value in extensions.items():
            parts.append((ext_id << 4) | (len(value) - 1))
            parts += value
        profile = 0xBEDE
    else:
        for ext_id, value in extensions.items():
            if not 1 <= ext_id <= 255 or len(value) > 255:
                raise RtpError(f"extension {ext_id} cannot be encoded")
            parts += bytes((ext_id, len(value)))
            parts += value
        profile = 0x1000
    parts += bytes(-len(parts) % 4)
    return struct.pack("!HH", profile, len(parts) // 4) + bytes(parts)


def find_extension(data: bytes, ext_id: int) -> bytes | None:
    """Return one extension's value from a whole RTP packet, or None (fast path).

    Assumes a packet already validated by SRTP authentication; returns None rather than
    raising on a malformed block.
    """
    first = data[0]
    if not first & 0x10:
        return None
    pos = 12 + 4 * (first & 0x0F)
    if len(data) < pos + 4:
        return None
    profile = (data[pos] << 8) | data[pos + 1]
    end = pos + 4 + 4 * ((data[pos + 2] << 8) | data[pos + 3])
    if end > len(data):
        return None
    pos += 4
    if profile == 0xBEDE:
        while pos < end:
            byte = data[pos]
            if byte == 0:
                pos += 1
                continue
            i = byte >> 4
            if i == 15:
                return None
            length = (byte & 0x0F) + 1
            if i == ext_id:
                return data[pos + 1 : pos + 1 + length] if pos + 1 + length <= end else None
            pos += 1 + length
    elif profile & 0xFFF0 == 0x1000:
        while pos + 1 < end:
            i = data[pos]
            if i == 0:
                pos += 1
                continue
            length = data[pos + 1]
            if i == ext_id:
                return data[pos + 2 : pos + 2 + length] if pos + 2 + length <= end else None
            pos += 2 + length
    return None


def parse_audio_level(value: bytes) -> tuple[bool, int]:
    """RFC 6464: (voice activity flag, level in -dBov, 0 loudest .. 127 silent)."""
    if len(value) < 1:
        raise RtpError("empty audio level extension")
    return bool(value[0] & 0x80), value[0] & 0x7F


def serialize_audio_level(voice: bool, level: int) -> bytes:
    """RFC 6464 value for ``level`` in -dBov (0-127)."""
    if not 0 <= level <= 127:
        raise RtpError("audio level out of range")
    return bytes([(0x80 if voice else 0) | level])


def abs_send_time(now: float) -> bytes:
    """abs-send-time value: 6.18 fixed-point seconds, 24 bits, for time ``now``."""
    value = int(now * (1 << 18)) & 0xFFFFFF
    return value.to_bytes(3, "big")


def parse_abs_send_time(value: bytes) -> float:
    """Seconds (modulo 64) encoded by :func:`abs_send_time`."""
    if len(value) != 3:
        raise RtpError("abs-send-time must be 3 bytes")
    return int.from_bytes(value, "big") / (1 << 18)


def parse_sdes_item(value: bytes) -> str:
    """MID / RID value: ASCII alphanumerics (RFC 8852 s3.1)."""
    text = value.rstrip(b"\x00").decode("ascii", "replace")
    if not text or not text.replace("-", "").replace("_", "").isalnum():
        raise RtpError(f"bad RID/MID value {value!r}")
    return text
