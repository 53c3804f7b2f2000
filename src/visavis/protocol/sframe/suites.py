"""SFrame cipher suites (RFC 9605 s4.5, s8.1) and the key schedule (s4.4.2).

Each base key yields, per KID, an AEAD key and a salt through HKDF with the suite's
hash. The AES-CTR-HMAC suites (s4.5.1) split that key into an encryption and an
authentication half and truncate the HMAC tag; the AES-GCM suites use it as is.
"""

from __future__ import annotations

import enum
import hmac
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from visavis.protocol.sframe.errors import AuthenticationError, TruncatedError


class CipherSuite(enum.IntEnum):
    """The five suites registered by RFC 9605 s8.1."""

    AES_128_CTR_HMAC_SHA256_80 = 1
    AES_128_CTR_HMAC_SHA256_64 = 2
    AES_128_CTR_HMAC_SHA256_32 = 3
    AES_128_GCM_SHA256_128 = 4
    AES_256_GCM_SHA512_128 = 5


@dataclass(frozen=True)
class SuiteParams:
    """Sizes of one suite in bytes: key (Nk), nonce (Nn), tag (Nt), CTR-mode key (Nka)."""

    hash_name: str
    nk: int
    nn: int
    nt: int
    nka: int = 0  # 0: AES-GCM


PARAMS: dict[CipherSuite, SuiteParams] = {
    CipherSuite.AES_128_CTR_HMAC_SHA256_80: SuiteParams("sha256", 48, 12, 10, 16),
    CipherSuite.AES_128_CTR_HMAC_SHA256_64: SuiteParams("sha256", 48, 12, 8, 16),
    CipherSuite.AES_128_CTR_HMAC_SHA256_32: SuiteParams("sha256", 48, 12, 4, 16),
    CipherSuite.AES_128_GCM_SHA256_128: SuiteParams("sha256", 16, 12, 16),
    CipherSuite.AES_256_GCM_SHA512_128: SuiteParams("sha512", 32, 12, 16),
}

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha512": hashes.SHA512,
}


def _labels(kid: int, suite: CipherSuite) -> tuple[bytes, bytes]:
    tail = struct.pack(">QH", kid, suite)
    return b"SFrame 1.0 Secret key " + tail, b"SFrame 1.0 Secret salt " + tail


def derive_secret(suite: CipherSuite, base_key: bytes) -> bytes:
    """``sframe_secret = HKDF-Extract("", base_key)``."""
    return hmac.digest(b"", base_key, PARAMS[suite].hash_name)


def derive_key_salt(suite: CipherSuite, kid: int, base_key: bytes) -> tuple[bytes, bytes]:
    """(sframe_key, sframe_salt) for ``kid`` from ``base_key`` (RFC 9605 s4.4.2)."""
    p = PARAMS[suite]
    secret = derive_secret(suite, base_key)
    key_label, salt_label = _labels(kid, suite)
    algorithm = _HASHES[p.hash_name]
    key = HKDFExpand(algorithm(), p.nk, key_label).derive(secret)
    salt = HKDFExpand(algorithm(), p.nn, salt_label).derive(secret)
    return key, salt


def hkdf(hash_name: str, ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF (RFC 5869) extract and expand, for the key schedule above SFrame."""
    return HKDF(_HASHES[hash_name](), length, salt, info).derive(ikm)


@dataclass
class Aead:
    """The AEAD of one suite under one key; build once per key, reuse per frame."""

    suite: CipherSuite
    key: bytes
    params: SuiteParams = field(init=False)
    _gcm: AESGCM | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.params = PARAMS[self.suite]
        if len(self.key) != self.params.nk:
            raise ValueError(f"suite {self.suite.name} needs a {self.params.nk}-byte key")
        if not self.params.nka:
            self._gcm = AESGCM(self.key)

    def seal(self, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
        """Ciphertext followed by the tag."""
        if self._gcm is not None:
            return self._gcm.encrypt(nonce, plaintext, aad)
        ct = self._ctr(nonce, plaintext)
        return ct + self._tag(nonce, aad, ct)

    def open(self, nonce: bytes, aad: bytes, sealed: bytes) -> bytes:
        """Plaintext, or AuthenticationError / TruncatedError."""
        nt = self.params.nt
        if len(sealed) < nt:
            raise TruncatedError(f"ciphertext shorter than the {nt}-byte tag")
        if self._gcm is not None:
            try:
                return self._gcm.decrypt(nonce, sealed, aad)
            except InvalidTag:
                raise AuthenticationError("AES-GCM tag mismatch") from None
        ct, tag = sealed[:-nt], sealed[-nt:]
        if not hmac.compare_digest(tag, self._tag(nonce, aad, ct)):
            raise AuthenticationError("HMAC tag mismatch")
        return self._ctr(nonce, ct)

    def _ctr(self, nonce: bytes, data: bytes) -> bytes:
        enc_key = self.key[: self.params.nka]
        counter = nonce + b"\x00\x00\x00\x00"
        encryptor = Cipher(algorithms.AES(enc_key), modes.CTR(counter)).encryptor()
        return encryptor.update(data) + encryptor.finalize()

    def _tag(self, nonce: bytes, aad: bytes, ct: bytes) -> bytes:
        auth_key = self.key[self.params.nka :]
        lengths = struct.pack(">QQQ", len(aad), len(ct), self.params.nt)
        mac = hmac.digest(auth_key, lengths + nonce + aad + ct, self.params.hash_name)
        return mac[: self.params.nt]
