"""SFrame applied to codec frames, leaving clear only what routing needs (sans-I/O).

Two layouts, one per codec family (docs/e2ee.md, "Clear bytes per codec"); in both the
clear bytes are SFrame metadata, so they are authenticated: changing one makes the
receiver drop the frame, and the receiver finds the layout from the bytes themselves.

* **Clear prefix** (VP8, Opus, VP9): ``clear || SFrame(header || AEAD(rest))``. VP8 keeps
  its frame tag (the keyframe bit the SFU reads) and, on keyframes, start code and
  size; Opus its TOC byte; VP9 nothing (its routing data, the RTP payload descriptor,
  is written by the packetizer outside the frame).
* **Units** (AV1, H.264): the sender's RTP packetizer parses these frames (AV1 OBUs by
  their headers and sizes, H.264 NAL units by start codes), so the frame must stay a
  well-formed sequence of units. Each unit keeps its header in clear (an H.264 slice
  also the first two bytes of its slice header, which the receiving browser reads for
  its PPS id; SPS, PPS and other non-slice NAL units stay wholly clear); the payloads,
  concatenated, are one SFrame plaintext, and the SFrame output
  ``header || ciphertext || tag`` is cut back into the payload slots: the first slot
  also carries the SFrame header, the last one the tag. The metadata lists each unit's
  clear bytes and plaintext length, so moving bytes between units is detected. H.264
  payload slots are escaped against start-code emulation (``00 00 0x`` -> ``00 00 03
  0x``) and end with ``0x80`` so that no slot ends in a zero; AV1 OBUs get explicit
  size fields, and temporal delimiter, tile list and padding OBUs (which the RTP
  packetizer drops anyway) are dropped.

=========  ==========================================  =================================
codec      clear (authenticated)                       why
=========  ==========================================  =================================
VP8        10 bytes on keyframes, 3 on delta frames    frame tag: keyframe bit for the SFU
Opus       1 byte                                      TOC byte
VP9        0 bytes                                     descriptor is outside the frame
AV1        every OBU header                            the packetizer parses OBUs
H.264      NAL headers, slice header's first 2 bytes,  the packetizer splits NAL units;
           SPS, PPS and other non-slice NAL units      the receiver parses SPS/PPS/PPS id
=========  ==========================================  =================================
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable

from visavis.protocol.sframe import Context, SendKey, SFrameError, Unprotected, decode_header
from visavis.protocol.sframe.suites import PARAMS


class Codec(enum.Enum):
    VP8 = "vp8"
    OPUS = "opus"
    VP9 = "vp9"
    AV1 = "av1"
    H264 = "h264"

    @classmethod
    def from_mime(cls, mime: str) -> Codec:
        """``video/VP8`` → VP8 (case-insensitive); ValueError for an unknown codec."""
        return cls(mime.split("/")[-1].lower())


class FrameError(SFrameError):
    """The frame is too short for its codec's clear bytes, or not a well-formed frame of
    its codec (AV1 OBUs, H.264 Annex B NAL units)."""

    reason = "frame"


Unit = tuple[bytes, bytes]  # (clear, payload)


def clear_length(codec: Codec, frame: bytes) -> int:
    """How many leading bytes of ``frame`` stay in clear (prefix codecs: VP8, Opus, VP9)."""
    if codec is Codec.VP8:
        if not frame:
            raise FrameError("empty VP8 frame")
        return 3 if frame[0] & 0x01 else 10  # P bit of the frame tag: 0 = keyframe
    if codec is Codec.OPUS:
        return 1
    if codec is Codec.VP9:
        return 0
    raise FrameError(f"{codec.name} frames have no clear prefix (their units stay clear)")


def encrypt_frame(key: SendKey, codec: Codec, frame: bytes) -> bytes:
    """The encrypted frame (layout of ``codec``) under the sender's key."""
    layout = _UNITS.get(codec)
    if layout is not None:
        split, join = layout
        return join(_seal(key, split(frame, False)), True)
    n = clear_length(codec, frame)
    if len(frame) < n:
        raise FrameError(f"{codec.name} frame of {len(frame)} bytes is shorter than its header")
    clear = frame[:n]
    return clear + key.protect(frame[n:], clear)


def decrypt_frame(context: Context, codec: Codec, data: bytes) -> Unprotected:
    """The plaintext frame or a typed SFrameError."""
    layout = _UNITS.get(codec)
    if layout is not None:
        split, join = layout
        units = split(data, True)
        result, plain = _open(context, units)
        frame = join(plain, False)
        return Unprotected(result.kid, result.ctr, result.metadata, frame)
    n = clear_length(codec, data)
    if len(data) <= n:
        raise FrameError("encrypted frame ends inside its clear prefix")
    clear = data[:n]
    result = context.unprotect(data[n:], clear)
    return Unprotected(result.kid, result.ctr, clear, clear + result.plaintext)


def frame_kid(codec: Codec, data: bytes) -> int:
    """The SFrame KID of an encrypted frame (to follow a sender's ratchet)."""
    layout = _UNITS.get(codec)
    if layout is None:
        return decode_header(data[clear_length(codec, data) :]).kid
    sealed = b"".join(payload for _, payload in layout[0](data, True))
    return decode_header(sealed).kid


# -- units: seal and open --------------------------------------------------------------------
def _metadata(units: list[Unit], lengths: list[int]) -> bytes:
    return b"".join(
        n.to_bytes(4, "big") + len(clear).to_bytes(2, "big") + clear
        for (clear, _), n in zip(units, lengths, strict=True)
    )


def _seal(key: SendKey, units: list[Unit]) -> list[Unit]:
    slots = [i for i, (_, payload) in enumerate(units) if payload]
    if not slots:
        raise FrameError("frame has no payload to encrypt")
    plaintext = b"".join(payload for _, payload in units)
    sealed = key.protect(plaintext, _metadata(units, [len(p) for _, p in units]))
    header = len(decode_header(sealed).raw)
    tag = len(sealed) - header - len(plaintext)
    out: list[Unit] = []
    pos = 0
    for i, (clear, payload) in enumerate(units):
        n = len(payload) + (header if i == slots[0] else 0) + (tag if i == slots[-1] else 0)
        out.append((clear, sealed[pos : pos + n] if payload else b""))
        pos += n if payload else 0
    return out


def _open(context: Context, units: list[Unit]) -> tuple[Unprotected, list[Unit]]:
    slots = [i for i, (_, payload) in enumerate(units) if payload]
    if not slots:
        raise FrameError("encrypted frame has no payload")
    sealed = b"".join(payload for _, payload in units)
    header = len(decode_header(sealed).raw)
    tag = PARAMS[context.suite].nt
    lengths = [
        len(payload) - (header if i == slots[0] else 0) - (tag if i == slots[-1] else 0)
        for i, (_, payload) in enumerate(units)
    ]
    if any(n < 0 for n in lengths):
        raise FrameError("encrypted frame's payloads are shorter than SFrame's header and tag")
    result = context.unprotect(sealed, _metadata(units, lengths))
    plain: list[Unit] = []
    pos = 0
    for (clear, payload), n in zip(units, lengths, strict=True):
        plain.append((clear, result.plaintext[pos : pos + n] if payload else b""))
        pos += n if payload else 0
    return result, plain


# -- AV1: OBUs (AV1 spec s5.3) ----------------------------------------------------------------
_AV1_DROPPED = (2, 8, 15)  # temporal delimiter, tile list, padding


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        if pos >= len(data):
            break
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos
    raise FrameError("AV1 OBU size field is truncated")


def _leb128_bytes(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def av1_units(frame: bytes, encrypted: bool = False) -> list[Unit]:
    """The OBUs of a frame as (header with its size-field bit cleared, payload)."""
    out: list[Unit] = []
    pos, n = 0, len(frame)
    while pos < n:
        first = frame[pos]
        if first & 0x80:
            raise FrameError("AV1 OBU header has its forbidden bit set")
        size = 2 if first & 0x04 else 1
        if pos + size > n:
            raise FrameError("AV1 OBU header is truncated")
        header = bytes((first & ~0x02,)) + frame[pos + 1 : pos + size]
        pos += size
        length = n - pos
        if first & 0x02:
            length, pos = _leb128(frame, pos)
        if pos + length > n:
            raise FrameError("AV1 OBU overruns the frame")
        if (first >> 3) & 0x0F not in _AV1_DROPPED:
            out.append((header, frame[pos : pos + length]))
        pos += length
    if not out:
        raise FrameError("AV1 frame has no OBU")
    return out


def av1_join(units: list[Unit], encrypted: bool = False) -> bytes:
    """OBUs with explicit size fields."""
    return b"".join(
        bytes((clear[0] | 0x02,)) + clear[1:] + _leb128_bytes(len(payload)) + payload
        for clear, payload in units
    )


# -- H.264: Annex B NAL units (RFC 6184 s1.3, H.264 s7.4.1) -----------------------------------
_SLICES = range(1, 6)  # coded slices (non-IDR, partitions A-C, IDR)
_SLICE_CLEAR = 3  # NAL header + first_mb_in_slice, slice_type, pic_parameter_set_id
_START = b"\x00\x00\x01"


def _nal_units(frame: bytes) -> list[bytes]:
    first = frame.find(_START)
    if first < 0 or frame[:first].strip(b"\x00"):
        raise FrameError("H.264 frame is not Annex B (no start code first)")
    out = []
    pos = first + 3
    while True:
        nxt = frame.find(_START, pos)
        end = len(frame) if nxt < 0 else nxt
        nal = frame[pos:end].rstrip(b"\x00") if nxt >= 0 else frame[pos:end]
        if nal:
            out.append(nal)
        if nxt < 0:
            return out
        pos = nxt + 3


def _escape(data: bytes) -> bytes:
    """Emulation prevention (H.264 s7.4.1): no start code inside, then the 0x80 end."""
    out = bytearray()
    pos = 0
    while (i := data.find(b"\x00\x00", pos)) >= 0 and i + 2 < len(data):
        out += data[pos : i + 2]
        if data[i + 2] <= 3:
            out.append(3)
        pos = i + 2
    out += data[pos:]
    out.append(0x80)
    return bytes(out)


def _unescape(data: bytes) -> bytes:
    if not data or data[-1] != 0x80:
        raise FrameError("H.264 encrypted slice does not end with its 0x80 marker")
    return data[:-1].replace(b"\x00\x00\x03", b"\x00\x00")


def h264_units(frame: bytes, encrypted: bool = False) -> list[Unit]:
    """NAL units as (clear, payload): slices keep 3 bytes clear, others all of them."""
    out: list[Unit] = []
    for nal in _nal_units(frame):
        if nal[0] & 0x1F in _SLICES and len(nal) > _SLICE_CLEAR:
            payload = nal[_SLICE_CLEAR:]
            out.append((nal[:_SLICE_CLEAR], _unescape(payload) if encrypted else payload))
        else:
            out.append((nal, b""))
    return out


def h264_join(units: list[Unit], encrypted: bool = False) -> bytes:
    """Annex B with 4-byte start codes; encrypted slice payloads escaped."""
    return b"".join(
        b"\x00\x00\x00\x01" + clear + (_escape(payload) if encrypted and payload else payload)
        for clear, payload in units
    )


Split = Callable[[bytes, bool], list[Unit]]
Join = Callable[[list[Unit], bool], bytes]
_UNITS: dict[Codec, tuple[Split, Join]] = {
    Codec.AV1: (av1_units, av1_join),
    Codec.H264: (h264_units, h264_join),
}


class FrameStats:
    """Frames encrypted, decrypted, and dropped by reason (exported as metrics)."""

    def __init__(self) -> None:
        self.encrypted = 0
        self.decrypted = 0
        self.dropped: Counter[str] = Counter()

    def drop(self, error: SFrameError) -> None:
        self.dropped[error.reason] += 1
