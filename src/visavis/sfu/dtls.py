"""The SFU's DTLS-SRTP: the handshake is the sans-I/O :mod:`visavis.protocol.dtls`
(OpenSSL memory BIOs, fingerprint check, RFC 5764 key export); this module turns the
keys it exports into the fast path's SRTP sessions (native _srtp.c or pylibsrtp)."""

from __future__ import annotations

from visavis.protocol.dtls import (
    AEAD_AES_128_GCM,
    AES128_CM_SHA1_80,
    DtlsIdentity,
    DtlsServer,
    DtlsState,
    SrtpKeys,
    SrtpProfile,
    fingerprint,
)
from visavis.sfu import fastpath

__all__ = ["DtlsIdentity", "DtlsServer", "DtlsState", "fingerprint", "srtp_sessions"]

_LIBSRTP: dict[SrtpProfile, int] = {
    AEAD_AES_128_GCM: fastpath.PROFILE_AEAD_AES_128_GCM,
    AES128_CM_SHA1_80: fastpath.PROFILE_AES128_CM_SHA1_80,
}


def srtp_sessions(keys: SrtpKeys) -> tuple[fastpath.Session, fastpath.Session]:
    """(inbound, outbound) SRTP sessions of the server side: window 1024, repeated
    sequence numbers allowed on send (NACK answers resend one already sent)."""
    profile = _LIBSRTP[keys.profile]
    return fastpath.Session(keys.client, profile, False), fastpath.Session(
        keys.server, profile, True
    )
