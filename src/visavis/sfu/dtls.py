"""DTLS-SRTP server side (RFC 5763/5764) on OpenSSL memory BIOs, without sockets.

Feed each DTLS datagram to :meth:`DtlsServer.receive`; send back what it returns. When
:attr:`DtlsServer.state` becomes ``CONNECTED`` the SRTP sessions are ready. The SFU is
always DTLS server (``a=setup:passive``), so retransmission is driven by the client:
a retransmitted client flight makes OpenSSL resend ours, and the server needs no timer.
"""

from __future__ import annotations

import datetime
import enum
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL

from visavis.sfu import fastpath

_DIGESTS = {"sha-256": hashes.SHA256(), "sha-384": hashes.SHA384(), "sha-512": hashes.SHA512()}


@dataclass(frozen=True)
class _Profile:
    openssl: bytes
    libsrtp: int
    key_length: int
    salt_length: int


_PROFILES = [
    _Profile(b"SRTP_AEAD_AES_128_GCM", fastpath.PROFILE_AEAD_AES_128_GCM, 16, 12),
    _Profile(b"SRTP_AES128_CM_SHA1_80", fastpath.PROFILE_AES128_CM_SHA1_80, 16, 14),
]


def fingerprint(cert: x509.Certificate, algorithm: str = "sha-256") -> str:
    """Colon-separated upper-case hex digest, as in ``a=fingerprint``."""
    digest = cert.fingerprint(_DIGESTS[algorithm]).hex().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


class DtlsIdentity:
    """The SFU's certificate and the one OpenSSL context shared by every transport."""

    def __init__(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, os.urandom(8).hex())])
        now = datetime.datetime.now(tz=datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256())
        )
        self.fingerprint = fingerprint(self.certificate)
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.set_options(SSL.OP_NO_TICKET)
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *args: True)
        ctx.use_certificate(self.certificate)
        ctx.use_privatekey(key)
        ctx.set_cipher_list(
            b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
            b"ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA"
        )
        ctx.set_tlsext_use_srtp(b":".join(p.openssl for p in _PROFILES))
        self.context = ctx


class DtlsState(enum.Enum):
    CONNECTING = 0
    CONNECTED = 1
    FAILED = 2
    CLOSED = 3


class DtlsServer:
    """One DTLS association; after the handshake, holds the SRTP sessions."""

    def __init__(self, identity: DtlsIdentity, remote_fingerprints: list[tuple[str, str]]) -> None:
        self._remote_fingerprints = remote_fingerprints
        self._ssl = SSL.Connection(identity.context)
        self._ssl.set_accept_state()
        self.state = DtlsState.CONNECTING
        self.error: str | None = None
        self.rx_srtp: fastpath.Session | None = None
        self.tx_srtp: fastpath.Session | None = None

    def receive(self, data: bytes) -> list[bytes]:
        """Process one DTLS datagram; return the datagrams to send back."""
        if self.state in (DtlsState.FAILED, DtlsState.CLOSED):
            return []
        try:
            self._ssl.bio_write(data)
        except SSL.Error:
            return []
        if self.state is DtlsState.CONNECTING:
            try:
                self._ssl.do_handshake()
            except SSL.WantReadError:
                return self._drain()
            except SSL.Error as exc:
                self._fail(f"handshake failed: {exc}")
                return self._drain()
            out = self._drain()
            self._complete()
            return out
        try:
            self._ssl.recv(1500)
        except SSL.ZeroReturnError:
            self.state = DtlsState.CLOSED
        except SSL.Error:
            pass
        return self._drain()

    def _drain(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self._ssl.bio_read(1500))
            except SSL.Error:
                return out

    def _fail(self, reason: str) -> None:
        self.state = DtlsState.FAILED
        self.error = reason

    def _complete(self) -> None:
        cert = self._ssl.get_peer_certificate(as_cryptography=True)
        if cert is None:
            self._fail("no client certificate")
            return
        checked = 0
        for algorithm, value in self._remote_fingerprints:
            if algorithm in _DIGESTS:
                if fingerprint(cert, algorithm) != value:
                    self._fail("certificate fingerprint mismatch")
                    return
                checked += 1
        if not checked:
            self._fail("no usable fingerprint")
            return
        selected = self._ssl.get_selected_srtp_profile()
        profile = next((p for p in _PROFILES if p.openssl == selected), None)
        if profile is None:
            self._fail("no SRTP profile negotiated")
            return
        k, s = profile.key_length, profile.salt_length
        material = self._ssl.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (k + s))
        client_key = material[:k] + material[2 * k : 2 * k + s]
        server_key = material[k : 2 * k] + material[2 * k + s :]
        self.rx_srtp = _session(client_key, False, profile)
        self.tx_srtp = _session(server_key, True, profile)
        self.state = DtlsState.CONNECTED


def _session(key: bytes, outbound: bool, profile: _Profile) -> fastpath.Session:
    """An SRTP session of the fast path (native _srtp.c or pylibsrtp): window 1024,
    repeated sequence numbers allowed on send (NACK answers resend one already sent)."""
    return fastpath.Session(key, profile.libsrtp, outbound)
