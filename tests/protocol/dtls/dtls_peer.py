"""A DTLS client on pyOpenSSL memory BIOs (as a browser is, for the SFU) and the loop
that moves datagrams between it and a :class:`DtlsServer` in one process."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from OpenSSL import SSL

from visavis.protocol.dtls import DtlsServer, DtlsState, fingerprint


def certificate(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, names: int = 0
) -> x509.Certificate:
    """Self-signed, with ``names`` DNS names (to make it as large as a test needs)."""
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "peer")])
    now = datetime.datetime.now(tz=datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if names:
        sans = [x509.DNSName(f"host-{i:04d}.peer.example.org") for i in range(names)]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256())


class Client:
    """The active side: offers ``profiles`` (OpenSSL's use_srtp names)."""

    def __init__(self, profiles: bytes = b"SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80"):
        key = ec.generate_private_key(ec.SECP256R1())
        self.certificate = certificate(key)
        self.fingerprint = fingerprint(self.certificate)
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.set_verify(SSL.VERIFY_PEER, lambda *args: True)
        ctx.use_certificate(self.certificate)
        ctx.use_privatekey(key)
        ctx.set_tlsext_use_srtp(profiles)
        self.ssl = SSL.Connection(ctx)
        self.ssl.set_connect_state()
        self.done = False

    def step(self) -> list[bytes]:
        """Advance the handshake; return what the client writes (one item per read)."""
        try:
            self.ssl.do_handshake()
            self.done = True
        except SSL.WantReadError:
            pass
        out = []
        while True:
            try:
                out.append(self.ssl.bio_read(65536))
            except SSL.Error:
                return out

    def take(self, datagrams: list[bytes]) -> None:
        for datagram in datagrams:
            self.ssl.bio_write(datagram)


def handshake(client: Client, server: DtlsServer, rounds: int = 8) -> list[list[bytes]]:
    """Run the handshake; return every datagram list the server answered with."""
    answers: list[list[bytes]] = []
    for _ in range(rounds):
        for datagram in client.step():
            answer = server.receive(datagram)
            answers.append(answer)
            client.take(answer)
        if client.done or server.state is DtlsState.FAILED:
            break
    client.step()
    return answers
