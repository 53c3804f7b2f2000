"""The DTLS-SRTP server (visavis.protocol.dtls.DtlsServer) against a pyOpenSSL client in
one process: the handshake, the SRTP keys both ends derive (RFC 5764 s4.2, sliced here
independently), the fingerprint checks, and a flight too big for one datagram."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from dtls_peer import Client, certificate, handshake
from OpenSSL import SSL

from visavis.protocol.dtls import (
    AEAD_AES_128_GCM,
    AES128_CM_SHA1_80,
    DATAGRAM_LIMIT,
    DtlsIdentity,
    DtlsServer,
    DtlsState,
    fingerprint,
    split_records,
)


@pytest.fixture(scope="module")
def identity() -> DtlsIdentity:
    return DtlsIdentity()


@pytest.mark.parametrize(
    ("offer", "profile"),
    [
        (b"SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80", AEAD_AES_128_GCM),
        (b"SRTP_AES128_CM_SHA1_80", AES128_CM_SHA1_80),
    ],
)
def test_handshake_exports_the_keys_the_client_derives(
    identity: DtlsIdentity, offer: bytes, profile: object
) -> None:
    client = Client(offer)
    server = DtlsServer(identity, [("sha-256", client.fingerprint)])
    handshake(client, server)
    assert client.done and server.state is DtlsState.CONNECTED and server.error is None
    assert server.srtp is not None and server.srtp.profile is profile
    # The client's view, cut by RFC 5764 s4.2: keys (16 each) then salts (14 or 12 each).
    salt = 12 if profile is AEAD_AES_128_GCM else 14
    material = client.ssl.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (16 + salt))
    client_key, server_key = material[:16], material[16:32]
    client_salt, server_salt = material[32 : 32 + salt], material[32 + salt :]
    assert server.srtp.client == client_key + client_salt
    assert server.srtp.server == server_key + server_salt
    peer = client.ssl.get_peer_certificate(as_cryptography=True)
    assert peer is not None and fingerprint(peer) == identity.fingerprint
    # Application data after the handshake is read and ignored; close_notify closes.
    client.ssl.send(b"hello")
    assert server.receive(client.step()[0]) == [] and server.state is DtlsState.CONNECTED
    client.ssl.shutdown()
    server.receive(client.step()[0])
    assert server.state is DtlsState.CLOSED
    assert server.receive(b"\x16\xfe\xfd" + bytes(20)) == []


def test_fingerprint_checks(identity: DtlsIdentity) -> None:
    client = Client()
    wrong = DtlsServer(identity, [("sha-256", "00:11")])
    handshake(client, wrong)
    assert wrong.state is DtlsState.FAILED and wrong.error == "certificate fingerprint mismatch"
    assert wrong.srtp is None
    client = Client()
    unusable = DtlsServer(identity, [("md5", "00:11")])
    handshake(client, unusable)
    assert unusable.state is DtlsState.FAILED and unusable.error == "no usable fingerprint"
    client = Client()
    sha512 = DtlsServer(identity, [("sha-512", fingerprint(client.certificate, "sha-512"))])
    handshake(client, sha512)
    assert sha512.state is DtlsState.CONNECTED


def test_no_common_srtp_profile_fails(identity: DtlsIdentity) -> None:
    client = Client(b"SRTP_AES128_CM_SHA1_32")
    server = DtlsServer(identity, [("sha-256", client.fingerprint)])
    handshake(client, server)
    assert server.state is DtlsState.FAILED and server.error == "no SRTP profile negotiated"


def test_garbage_while_connecting_is_no_answer(identity: DtlsIdentity) -> None:
    client = Client()
    server = DtlsServer(identity, [("sha-256", client.fingerprint)])
    # A record whose length runs past the datagram: OpenSSL discards it, nothing to say.
    assert server.receive(b"\x16\xfe\xfd" + bytes(8) + b"\x01\x00" + bytes(5)) == []
    assert server.state is DtlsState.CONNECTING
    handshake(client, server)
    assert server.state is DtlsState.CONNECTED


class _RsaIdentity(DtlsIdentity):
    """A server whose certificate (RSA-4096, 80 names) makes its flight over 1,500 bytes."""

    def __init__(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
        self.certificate = certificate(key, names=80)
        self.fingerprint = fingerprint(self.certificate)
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *args: True)
        ctx.use_certificate(self.certificate)
        ctx.use_privatekey(key)
        ctx.set_cipher_list(b"ECDHE-RSA-AES128-GCM-SHA256")
        ctx.set_tlsext_use_srtp(b"SRTP_AEAD_AES_128_GCM")
        self.context = ctx


def test_a_flight_over_one_datagram_goes_out_as_whole_records() -> None:
    client = Client()
    server = DtlsServer(_RsaIdentity(), [("sha-256", client.fingerprint)])
    answers = handshake(client, server)
    assert server.state is DtlsState.CONNECTED
    flight = max(answers, key=lambda datagrams: sum(map(len, datagrams)))
    assert sum(map(len, flight)) > DATAGRAM_LIMIT and len(flight) > 1
    for datagram in flight:
        records = split_records(datagram)  # whole records only: nothing cut in two
        assert len(datagram) <= DATAGRAM_LIMIT or len(records) == 1
