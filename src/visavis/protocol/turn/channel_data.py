"""ChannelData messages (RFC 8656 12.4-12.5) and stream framing (RFC 8656 12.5, RFC 6062).

A ChannelData message is a 4-byte header (channel number, length) and the application
data. Over UDP trailing padding is optional; over TCP and TLS every ChannelData message is
padded to a multiple of 4 bytes so that the stream can be split without parsing content.
"""

from __future__ import annotations

import struct

from visavis.protocol.stun.constants import HEADER_LENGTH
from visavis.protocol.turn.errors import ChannelDataError, FramingError

CHANNEL_MIN = 0x4000
# RFC 8656 assigns 0x4000-0x4FFF; RFC 5766 allowed up to 0x7FFE and coturn's clients use
# that range, so we accept it (nothing else arrives on a TURN port with these first bytes).
CHANNEL_MAX = 0x7FFE
_HEAD = struct.Struct("!HH")


def is_channel_data(data: bytes) -> bool:
    """A first byte of 64-127 is ChannelData (RFC 7983 gives 64-79; RFC 5766 used up to 127)."""
    return len(data) >= 4 and 0x40 <= data[0] <= 0x7F


def parse_channel_data(data: bytes) -> tuple[int, bytes]:
    """Return (channel number, application data); raise :class:`ChannelDataError`."""
    if len(data) < 4:
        raise ChannelDataError("shorter than a ChannelData header")
    channel, length = _HEAD.unpack_from(data)
    if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
        raise ChannelDataError(f"channel 0x{channel:04x} out of range")
    if 4 + length > len(data):
        raise ChannelDataError("length exceeds the datagram")
    return channel, data[4 : 4 + length]


def encode_channel_data(channel: int, payload: bytes, *, pad: bool = False) -> bytes:
    """ChannelData header + payload, padded to 4 bytes when ``pad`` (stream transports)."""
    out = _HEAD.pack(channel, len(payload)) + payload
    if pad and len(payload) % 4:
        out += b"\x00" * (-len(payload) % 4)
    return out


class StreamFramer:
    """Splits a TCP/TLS byte stream into STUN messages and (padded) ChannelData messages.

    :meth:`feed` returns the complete frames received so far and keeps the remainder.
    It raises :class:`FramingError` when the stream cannot be STUN or ChannelData, after
    which the caller closes the connection.
    """

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int = 0xFFFF + HEADER_LENGTH) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes) -> list[bytes]:
        """Append ``data``; return every complete frame."""
        self._buf += data
        frames: list[bytes] = []
        while (frame := self.pop()) is not None:
            frames.append(frame)
        return frames

    def append(self, data: bytes) -> None:
        self._buf += data

    def pop(self) -> bytes | None:
        """The next complete frame, or None when more bytes are needed."""
        buf = self._buf
        n = len(buf)
        if n < 4:
            return None
        first = buf[0]
        if first < 0x40:
            size = HEADER_LENGTH + ((buf[2] << 8) | buf[3])
        elif first <= 0x7F:
            length = (buf[2] << 8) | buf[3]
            size = 4 + length + (-length % 4)
        else:
            raise FramingError(f"first byte 0x{first:02x} is neither STUN nor ChannelData")
        if size > self.max_frame:
            raise FramingError("frame too large")
        if n < size:
            return None
        frame = bytes(buf[:size])
        del buf[:size]
        return frame

    def take_rest(self) -> bytes:
        """Everything buffered, unframed (a connection switching to raw data, RFC 6062)."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest

    @property
    def buffered(self) -> int:
        return len(self._buf)
