"""Device identity keys, trust-on-first-use pins and the per-call verification code.

Each device makes an Ed25519 key pair on first use and keeps the private half in a
file only it can read; signaling only ever sees the public half. A contact's device key
is pinned the first time it is seen (:class:`Pins`); a different key later is reported
as ``CHANGED`` so the client warns before the call connects. The verification code is a
hash of the call id and every participant's device key: people read it aloud, and it
differs if anyone's key was substituted.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class DeviceIdentity:
    """This device's long-term Ed25519 key pair (the private half never leaves it)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> DeviceIdentity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> DeviceIdentity:
        """Read the key from ``path``, or make one and store it there (mode 0600)."""
        if path.exists():
            private = serialization.load_pem_private_key(path.read_bytes(), None)
            if not isinstance(private, Ed25519PrivateKey):
                raise ValueError(f"{path} does not hold an Ed25519 key")
            return cls(private)
        identity = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = identity._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # Written whole under a private name, then linked: a process starting at the same
        # moment either sees no key or a complete one, and the first link wins.
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        try:
            os.link(partial, path)
        except FileExistsError:
            return cls.load_or_create(path)
        finally:
            partial.unlink()
        return identity

    @property
    def public_b64(self) -> str:
        return b64(self.public)

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)


def verify(public: bytes, signature: bytes, data: bytes) -> bool:
    """True if ``signature`` is ``public``'s Ed25519 signature of ``data``."""
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


class PinStatus(enum.Enum):
    NEW = "new"  # first sight: pinned now
    SAME = "same"
    CHANGED = "changed"  # warn before the call connects


class Pins:
    """Trust-on-first-use pins: (handle, device id) → device public key."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._pins: dict[str, str] = {}
        if path is not None and path.exists():
            self._pins = json.loads(path.read_text())

    def check(self, handle: str, device_id: str, public: bytes) -> PinStatus:
        """Compare with the pin; pin on first sight. A change is NOT re-pinned here."""
        name = f"{handle}/{device_id}"
        pinned = self._pins.get(name)
        if pinned is None:
            self._pins[name] = b64(public)
            self._save()
            return PinStatus.NEW
        return PinStatus.SAME if pinned == b64(public) else PinStatus.CHANGED

    def accept(self, handle: str, device_id: str, public: bytes) -> None:
        """The user accepted a changed key: pin the new one."""
        self._pins[f"{handle}/{device_id}"] = b64(public)
        self._save()

    def _save(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self._pins, sort_keys=True))


def verification_code(call_id: str, keys: dict[str, bytes], groups: int = 4) -> str:
    """Groups of five digits from the call id and every device's identity key.

    ``keys`` maps device id to public key (this device's included); the order does not
    matter. 20 digits carry about 66 bits: an attacker cannot choose substitute keys
    that give the same code for this call.
    """
    digest = hashlib.sha256(b"visavis verification v1\x00" + call_id.encode())
    for device_id in sorted(keys):
        digest.update(len(device_id).to_bytes(2, "big") + device_id.encode() + keys[device_id])
    value = int.from_bytes(digest.digest()[:16], "big")
    parts = []
    for _ in range(groups):
        value, part = divmod(value, 100000)
        parts.append(f"{part:05d}")
    return " ".join(parts)
