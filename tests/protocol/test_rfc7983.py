"""RFC 7983 first-byte demultiplexing (visavis.protocol.rfc7983) on real first bytes."""

from __future__ import annotations

from visavis.protocol.rfc7983 import PacketKind, classify


def test_every_first_byte() -> None:
    kinds = [classify(b) for b in range(256)]
    assert kinds[0:4] == [PacketKind.STUN] * 4  # binding request 0x00 0x01, response 0x01
    assert kinds[20:64] == [PacketKind.DTLS] * 44  # 22 handshake, 23 application data
    assert kinds[128:192] == [PacketKind.SRTP] * 64  # V=2: 0x80 RTP, 0x81 RTCP with RC=1
    other = [b for b in range(256) if kinds[b] is PacketKind.OTHER]
    assert other == [*range(4, 20), *range(64, 128), *range(192, 256)]  # ZRTP, TURN, ...
