"""Sender keys of one call: random base keys, forward ratchet, receive-side catch-up.

A sender key is (KID, 32-byte base key). KID = ``prefix << 8 | generation``: the
prefix is random per fresh key, the generation counts ratchet steps. Ratcheting
(``base' = HKDF(base, "visavis sframe ratchet")``, generation + 1) happens when someone
joins: the newcomer gets only the new key and cannot compute the old one. Receivers
who already hold generation g follow a sender to g+k by themselves (k <= MAX_SKIP)
when a frame under the new KID arrives, so a join costs one key message (to the
newcomer). A leave makes every sender draw a fresh random key, sent pairwise to those
who remain. Python cannot wipe memory: "erase" drops every reference to key bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from visavis.e2ee.frames import Codec, FrameStats, decrypt_frame, encrypt_frame, frame_kid
from visavis.protocol.sframe import (
    DEFAULT_SUITE,
    CipherSuite,
    Context,
    SendKey,
    SFrameError,
    UnknownKeyError,
)
from visavis.protocol.sframe.suites import hkdf

MAX_SKIP = 16
MAX_GENERATION = 0xFF
KEEP_OLD = 2  # keys kept per remote sender for frames in flight across a change

Random = Callable[[int], bytes]


@dataclass(frozen=True)
class SenderKey:
    kid: int
    base_key: bytes

    @property
    def prefix(self) -> int:
        return self.kid >> 8

    @property
    def generation(self) -> int:
        return self.kid & 0xFF


def fresh_key(rng: Random = os.urandom) -> SenderKey:
    """A random base key under a random non-zero 32-bit prefix, generation 0."""
    prefix = int.from_bytes(rng(4), "big") or 1
    return SenderKey(prefix << 8, rng(32))


def ratchet(key: SenderKey) -> SenderKey:
    """The next generation (one-way: the old key cannot be computed from the new)."""
    if key.generation >= MAX_GENERATION:
        raise ValueError("generation exhausted: draw a fresh key instead")
    info = b"visavis sframe ratchet v1" + key.kid.to_bytes(8, "big")
    return SenderKey(key.kid + 1, hkdf("sha256", key.base_key, b"", info, 32))


class Keyring:
    """This device's sending key and every remote sender's keys for one call."""

    def __init__(self, suite: CipherSuite = DEFAULT_SUITE, rng: Random = os.urandom) -> None:
        self.suite = suite
        self.rng = rng
        self.context = Context(suite)
        self.current = fresh_key(rng)
        self.send = SendKey(self.current.kid, self.current.base_key, suite)
        self._remote: dict[str, list[SenderKey]] = {}  # device -> newest last
        self._owner: dict[int, str] = {}  # prefix -> device
        self.stats = FrameStats()

    # -- sending ------------------------------------------------------------------------
    def advance(self) -> SenderKey:
        """Ratchet the sending key (someone joined); fresh key if generations ran out."""
        if self.current.generation >= MAX_GENERATION:
            return self.rotate()
        return self._use(ratchet(self.current))

    def rotate(self) -> SenderKey:
        """A fresh random sending key (someone left)."""
        return self._use(fresh_key(self.rng))

    def _use(self, key: SenderKey) -> SenderKey:
        self.current = key
        self.send = SendKey(key.kid, key.base_key, self.suite)
        return key

    # -- receiving ----------------------------------------------------------------------
    def install(self, device: str, key: SenderKey) -> None:
        """A key ``device`` sent us (pairwise, signed); older ones beyond KEEP_OLD go."""
        keys = [k for k in self._remote.get(device, []) if k.kid != key.kid] + [key]
        for old in keys[:-KEEP_OLD]:
            self.context.remove_key(old.kid)
            if not any(k.prefix == old.prefix for k in keys[-KEEP_OLD:]):
                self._owner.pop(old.prefix, None)
        self._remote[device] = keys[-KEEP_OLD:]
        self._owner[key.prefix] = device
        self.context.add_key(key.kid, key.base_key)

    def forget(self, device: str) -> None:
        """``device`` left: drop its keys."""
        for key in self._remote.pop(device, []):
            self.context.remove_key(key.kid)
            self._owner.pop(key.prefix, None)

    def sender_of(self, kid: int) -> str | None:
        return self._owner.get(kid >> 8)

    def encrypt(self, codec: Codec, frame: bytes) -> bytes:
        """One encoded frame, encrypted under the current sending key."""
        data = encrypt_frame(self.send, codec, frame)
        self.stats.encrypted += 1
        return data

    def decrypt(self, codec: Codec, data: bytes) -> bytes | None:
        """The plaintext frame, or None (dropped and counted by reason)."""
        try:
            try:
                result = decrypt_frame(self.context, codec, data)
            except UnknownKeyError:
                if not self._catch_up(codec, data):
                    raise
                result = decrypt_frame(self.context, codec, data)
        except SFrameError as error:
            self.stats.drop(error)
            return None
        self.stats.decrypted += 1
        return result.plaintext

    def _catch_up(self, codec: Codec, data: bytes) -> bool:
        kid = frame_kid(codec, data)
        device = self._owner.get(kid >> 8)
        if device is None:
            return False
        newest = self._remote[device][-1]
        if newest.prefix != kid >> 8 or not 0 < kid - newest.kid <= MAX_SKIP:
            return False
        key = newest
        while key.kid < kid:
            key = ratchet(key)
        self.install(device, key)
        return True

    def erase(self) -> None:
        """End of call: forget every key."""
        self.context.clear()
        self._remote.clear()
        self._owner.clear()
        self.current = SenderKey(0, b"")
