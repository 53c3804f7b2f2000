"""Long-term credentials (RFC 8489 9.2), REST ephemeral credentials (coturn's
``use-auth-secret``: username ``"<expiry unix>:<user>"``, password
``base64(HMAC-SHA1(secret, username))``) and stateless nonces.

Nonces are ``obMatJos2`` + 4 characters of security feature bits (RFC 8489 9.2) + an
opaque part: base64 of a 4-byte issue time and 8 bytes of HMAC-SHA256(nonce key, time ||
client IP). No per-client state is kept; a nonce older than its lifetime is stale (438).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from visavis.protocol.stun.constants import NONCE_COOKIE, PasswordAlgorithmId
from visavis.protocol.stun.integrity import long_term_key, userhash
from visavis.protocol.stun.text import SecurityFeatures, make_nonce


def rest_password(secret: str, username: str) -> str:
    """coturn's REST API password for ``username``."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def rest_credentials(secret: str, user: str, *, now: float, ttl: int) -> tuple[str, str]:
    """Mint (username, password) valid until ``now + ttl`` (unix seconds)."""
    username = f"{int(now) + int(ttl)}:{user}"
    return username, rest_password(secret, username)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who authenticated: the STUN username and the account quotas are counted against."""

    username: str
    account: str
    key: bytes
    algorithm: int


def parse_user_entry(entry: str) -> tuple[str, str | bytes]:
    """coturn's ``user=name:password`` or ``user=name:0x<hex MD5 key>``."""
    name, sep, secret = entry.partition(":")
    if not sep or not name:
        raise ValueError(f"user entry {entry!r} is not name:password")
    if secret.startswith("0x") and len(secret) == 34:
        try:
            return name, binascii.unhexlify(secret[2:])
        except binascii.Error:
            pass
    return name, secret


class CredentialStore:
    """Resolves a username to its key for one realm.

    :param users: static users, name to password (or to a 16-byte MD5 key, coturn's
        ``0x...`` form, which cannot serve SHA-256).
    :param rest_secret: the shared secret of REST credentials, or None to refuse them.
    :param lookup: optional callable name -> password for other sources (another store).
    """

    def __init__(
        self,
        realm: str,
        users: dict[str, str | bytes] | None = None,
        *,
        rest_secret: str | None = None,
        lookup: Callable[[str], str | None] | None = None,
    ) -> None:
        self.realm = realm
        self.users = dict(users or {})
        self.rest_secret = rest_secret
        self.lookup = lookup
        self._by_hash = {userhash(name, realm): name for name in self.users}

    @classmethod
    def from_entries(
        cls, realm: str, entries: Iterable[str], *, rest_secret: str | None = None
    ) -> CredentialStore:
        return cls(realm, dict(parse_user_entry(e) for e in entries), rest_secret=rest_secret)

    def username_for_hash(self, digest: bytes) -> str | None:
        return self._by_hash.get(digest)

    def identify(self, username: str, algorithm: int, now: float) -> Identity | None:
        """The key for ``username`` (None: unknown user, expired REST credential, or a
        stored key that cannot serve ``algorithm``)."""
        secret = self.users.get(username)
        if secret is None and self.lookup is not None:
            secret = self.lookup(username)
        if secret is not None:
            if isinstance(secret, bytes):
                if algorithm != PasswordAlgorithmId.MD5:
                    return None
                return Identity(username, username, secret, algorithm)
            key = long_term_key(username, self.realm, secret, algorithm)
            return Identity(username, username, key, algorithm)
        if self.rest_secret is not None:
            stamp, sep, account = username.partition(":")
            if not sep or not stamp.isdigit() or int(stamp) < now:
                return None
            password = rest_password(self.rest_secret, username)
            key = long_term_key(username, self.realm, password, algorithm)
            return Identity(username, account or username, key, algorithm)
        return None


class NonceManager:
    """Issues and validates stateless nonces bound to a client IP."""

    def __init__(
        self,
        key: bytes,
        *,
        lifetime: float = 600.0,
        features: SecurityFeatures = SecurityFeatures.PASSWORD_ALGORITHMS
        | SecurityFeatures.USERNAME_ANONYMITY,
    ) -> None:
        self.key = key
        self.lifetime = lifetime
        self.features = features

    def _mac(self, stamp: bytes, client_ip: str) -> bytes:
        return hmac.new(self.key, stamp + client_ip.encode(), hashlib.sha256).digest()[:8]

    def issue(self, client_ip: str, now: float) -> str:
        stamp = struct.pack("!I", int(now) & 0xFFFFFFFF)
        opaque = base64.b64encode(stamp + self._mac(stamp, client_ip)).decode("ascii")
        if self.features:
            return make_nonce(self.features, opaque)
        return opaque

    def check(self, nonce: str, client_ip: str, now: float) -> bool:
        """True when ``nonce`` was issued by us to this IP and is still fresh."""
        opaque = nonce
        if nonce.startswith(NONCE_COOKIE):
            opaque = nonce[len(NONCE_COOKIE) + 4 :]
            if nonce != make_nonce(self.features, opaque):
                return False
        elif self.features:
            return False
        try:
            raw = base64.b64decode(opaque.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            return False
        if len(raw) != 12 or not hmac.compare_digest(raw[4:], self._mac(raw[:4], client_ip)):
            return False
        issued: int = struct.unpack("!I", raw[:4])[0]
        age = (int(now) - issued) & 0xFFFFFFFF
        return bool(age <= self.lifetime)
