"""The SFU's SRTP sessions from a real DTLS-SRTP handshake (visavis.sfu.dtls): what the
client encrypts with its own exported keys (RFC 5764 s4.2, sliced here independently,
pylibsrtp as the client's SRTP) the SFU decrypts, and the other way round, for both
profiles; the sessions are the fast path's (native libsrtp2 when built)."""

from __future__ import annotations

import struct

import pylibsrtp
import pytest

from tests.protocol.dtls.dtls_peer import Client, handshake
from visavis.sfu.dtls import DtlsIdentity, DtlsServer, DtlsState, srtp_sessions

RTP = struct.pack("!BBHII", 0x80, 96, 4242, 90000, 0x1234ABCD) + bytes(range(100))
RTCP = struct.pack("!BBHI", 0x81, 201, 7, 0x1234ABCD) + bytes(24)  # RR with one block


@pytest.mark.parametrize(
    ("offer", "profile", "salt"),
    [
        (b"SRTP_AEAD_AES_128_GCM", pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 12),
        (b"SRTP_AES128_CM_SHA1_80", pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 14),
    ],
)
def test_sessions_talk_to_the_client(offer: bytes, profile: int, salt: int) -> None:
    client = Client(offer)
    server = DtlsServer(DtlsIdentity(), [("sha-256", client.fingerprint)])
    handshake(client, server)
    assert server.state is DtlsState.CONNECTED and server.srtp is not None
    rx, tx = srtp_sessions(server.srtp)
    material = client.ssl.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (16 + salt))
    client_key = material[:16] + material[32 : 32 + salt]
    server_key = material[16:32] + material[32 + salt :]

    def session(key: bytes, outbound: bool) -> pylibsrtp.Session:
        kind = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
        return pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=kind, srtp_profile=profile))

    client_tx, client_rx = session(client_key, True), session(server_key, False)
    assert rx.unprotect(client_tx.protect(RTP)) == RTP
    assert rx.unprotect_rtcp(client_tx.protect_rtcp(RTCP)) == RTCP
    assert client_rx.unprotect(tx.protect(RTP)) == RTP
    assert client_rx.unprotect_rtcp(tx.protect_rtcp(RTCP)) == RTCP
