"""DTLS-SRTP server side (RFC 5763/5764) on OpenSSL memory BIOs, without sockets.

Feed each DTLS datagram to :meth:`DtlsServer.receive`; send back what it returns. When
:attr:`DtlsServer.state` becomes ``CONNECTED``, :attr:`DtlsServer.srtp` holds the SRTP
keys of both directions. The server is always the DTLS server (``a=setup:passive``), so
retransmission is driven by the client: a retransmitted client flight makes OpenSSL
resend ours, and the server needs no timer.
"""

from __future__ import annotations

import enum

from OpenSSL import SSL

from visavis.protocol.dtls.identity import DIGESTS, DtlsIdentity, fingerprint
from visavis.protocol.dtls.records import DtlsRecordError, pack_datagrams, split_records
from visavis.protocol.dtls.srtp import (
    EXPORTER_LABEL,
    SrtpKeys,
    profile_named,
    split_keying_material,
)

DATAGRAM_LIMIT = 1500  # bytes of records per datagram sent (and read per call to OpenSSL)


class DtlsState(enum.Enum):
    CONNECTING = 0
    CONNECTED = 1
    FAILED = 2
    CLOSED = 3


class DtlsServer:
    """One DTLS association; after the handshake, holds the SRTP keys."""

    def __init__(self, identity: DtlsIdentity, remote_fingerprints: list[tuple[str, str]]) -> None:
        self._remote_fingerprints = remote_fingerprints
        self._ssl = SSL.Connection(identity.context)
        self._ssl.set_accept_state()
        self.state = DtlsState.CONNECTING
        self.error: str | None = None
        self.srtp: SrtpKeys | None = None

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
            self._ssl.recv(DATAGRAM_LIMIT)
        except SSL.ZeroReturnError:
            self.state = DtlsState.CLOSED
        except SSL.Error:
            pass
        return self._drain()

    def _drain(self) -> list[bytes]:
        """What OpenSSL wrote, as datagrams of whole records."""
        chunks = []
        while True:
            try:
                chunks.append(self._ssl.bio_read(DATAGRAM_LIMIT))
            except SSL.Error:
                break
        if len(chunks) < 2:
            return chunks
        written = b"".join(chunks)
        try:
            return pack_datagrams(split_records(written), DATAGRAM_LIMIT)
        except DtlsRecordError:  # not DTLS 1.2 records (cannot happen): as read
            return chunks

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
            if algorithm in DIGESTS:
                if fingerprint(cert, algorithm) != value:
                    self._fail("certificate fingerprint mismatch")
                    return
                checked += 1
        if not checked:
            self._fail("no usable fingerprint")
            return
        profile = profile_named(self._ssl.get_selected_srtp_profile())
        if profile is None:
            self._fail("no SRTP profile negotiated")
            return
        material = self._ssl.export_keying_material(EXPORTER_LABEL, profile.material_length)
        self.srtp = split_keying_material(profile, material)
        self.state = DtlsState.CONNECTED
