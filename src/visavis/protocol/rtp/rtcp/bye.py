"""Goodbye (RFC 3550 s6.6)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from visavis.protocol.rtp.errors import RtcpError
from visavis.protocol.rtp.rtcp.header import PT_BYE, pack_header, unpack_header


@dataclass(frozen=True, slots=True)
class RtcpBye:
    """The sources that are leaving."""

    sources: tuple[int, ...]

    @classmethod
    def parse(cls, data: bytes) -> RtcpBye:
        count, packet_type, body = unpack_header(data)
        if packet_type != PT_BYE or len(body) < 4 * count:
            raise RtcpError("not a BYE packet")
        return cls(struct.unpack_from(f"!{count}I", body))

    def serialize(self) -> bytes:
        body = struct.pack(f"!{len(self.sources)}I", *self.sources)
        return pack_header(len(self.sources), PT_BYE, body)
