"""Source description (RFC 3550 s6.5): only CNAME matters to WebRTC."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from visavis.protocol.rtp.errors import RtcpError
from visavis.protocol.rtp.rtcp.header import PT_SDES, pack_header, unpack_header

CNAME = 1


@dataclass(frozen=True, slots=True)
class RtcpSdes:
    """SDES chunks: (ssrc, {item type: value})."""

    chunks: tuple[tuple[int, tuple[tuple[int, bytes], ...]], ...]

    @classmethod
    def parse(cls, data: bytes) -> RtcpSdes:
        count, packet_type, body = unpack_header(data)
        if packet_type != PT_SDES:
            raise RtcpError("not an SDES packet")
        pos = 0
        chunks = []
        for _ in range(count):
            if pos + 4 > len(body):
                raise RtcpError("SDES chunk truncated")
            ssrc = struct.unpack_from("!I", body, pos)[0]
            pos += 4
            items = []
            while True:
                if pos >= len(body):
                    raise RtcpError("SDES items not terminated")
                kind = body[pos]
                if kind == 0:
                    pos = (pos + 4) & ~3
                    break
                if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                    raise RtcpError("SDES item truncated")
                length = body[pos + 1]
                items.append((kind, body[pos + 2 : pos + 2 + length]))
                pos += 2 + length
            chunks.append((ssrc, tuple(items)))
        return cls(tuple(chunks))

    def serialize(self) -> bytes:
        body = bytearray()
        for ssrc, items in self.chunks:
            chunk = bytearray(struct.pack("!I", ssrc))
            for kind, value in items:
                chunk += bytes((kind, len(value))) + value
            chunk += b"\x00"
            chunk += bytes(-len(chunk) % 4)
            body += chunk
        return pack_header(len(self.chunks), PT_SDES, bytes(body))
