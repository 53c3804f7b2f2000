"""RFC 4571 framing, sans-I/O: RTP, RTCP, STUN and DTLS packets over a byte stream.

Each packet travels as a 16-bit big-endian length and then that many bytes; ICE-TCP
(RFC 6544) carries every packet of a WebRTC transport this way. :class:`Rfc4571Framer`
splits what a connection reads into packets, :func:`frame` prefixes one packet. A zero
length or one over the framer's limit is a broken stream (:class:`FramingError`): the
caller closes the connection, since a length it cannot trust leaves no way to resync.

(The relay's TCP/TLS framing is another one, RFC 8656 s12.5: STUN and padded
ChannelData, :class:`visavis.protocol.turn.StreamFramer`.)
"""

from __future__ import annotations

MAX_FRAME = 4096  # STUN, DTLS records and SRTP packets are MTU-sized; 4 KiB is generous
FRAME_LIMIT = 0xFFFF  # what a 2-byte length can say


class FramingError(ValueError):
    """The stream broke RFC 4571 framing (or our size limit): close the connection."""


def frame(data: bytes) -> bytes:
    """One packet with its length prefix; ValueError if it is empty or over 65535 bytes."""
    if not 0 < len(data) <= FRAME_LIMIT:
        raise ValueError(f"cannot frame {len(data)} bytes")
    return len(data).to_bytes(2, "big") + data


class Rfc4571Framer:
    """Splits a byte stream into frames (RFC 4571: 16-bit length, then that many bytes).

    :meth:`feed` takes whatever a read returned (part of a frame, several frames, or
    both) and returns the frames it completed. At most ``max_frame + 1`` bytes are
    buffered.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        if not 0 < max_frame <= FRAME_LIMIT:
            raise ValueError(f"max_frame must be 1..{FRAME_LIMIT}")
        self.max_frame = max_frame
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Return the frames completed by ``data``; raise :class:`FramingError` on a bad one."""
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        offset = 0
        end = len(buffer)
        while end - offset >= 2:
            length = (buffer[offset] << 8) | buffer[offset + 1]
            if length == 0 or length > self.max_frame:
                buffer.clear()
                raise FramingError(f"frame of {length} bytes (limit {self.max_frame})")
            if end - offset - 2 < length:
                break
            frames.append(bytes(buffer[offset + 2 : offset + 2 + length]))
            offset += 2 + length
        if offset:
            del buffer[:offset]
        return frames

    @staticmethod
    def frame(data: bytes) -> bytes:
        """One packet with its length prefix (:func:`frame`)."""
        return frame(data)
