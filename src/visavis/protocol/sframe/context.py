"""SFrame send and receive contexts (RFC 9605 s4.4): keys by KID, counters, replay.

Theory of operation. A :class:`SendKey` holds one sender's key for one KID and its
frame counter; :meth:`SendKey.protect` turns (metadata, plaintext) into
``header || ciphertext || tag`` with ``nonce = salt XOR counter`` and
``AAD = header || metadata`` (s4.4.3). A :class:`Context` holds the receive keys by
KID, each with a sliding replay window (s4.4.4's "SHOULD"), and
:meth:`Context.unprotect` returns the plaintext or raises a typed
:class:`~visavis.protocol.sframe.errors.SFrameError`. No clock, no randomness: base
keys are handed in by the key schedule above.
"""

from __future__ import annotations

from dataclasses import dataclass

from visavis.protocol.sframe.errors import (
    CounterExhaustedError,
    ReplayError,
    TruncatedError,
    UnknownKeyError,
)
from visavis.protocol.sframe.header import MAX_VALUE, decode_header, encode_header
from visavis.protocol.sframe.suites import Aead, CipherSuite, derive_key_salt

DEFAULT_SUITE = CipherSuite.AES_128_GCM_SHA256_128
DEFAULT_WINDOW = 1024  # frames: ~10 s of one audio + one video stream sharing a key


@dataclass(frozen=True)
class Unprotected:
    """A frame that passed authentication and the replay check."""

    kid: int
    ctr: int
    metadata: bytes
    plaintext: bytes


class _KeyState:
    __slots__ = ("aead", "kid", "salt_int")

    def __init__(self, suite: CipherSuite, kid: int, base_key: bytes) -> None:
        key, salt = derive_key_salt(suite, kid, base_key)
        self.kid = kid
        self.aead = Aead(suite, key)
        self.salt_int = int.from_bytes(salt, "big")

    def nonce(self, ctr: int) -> bytes:
        return (self.salt_int ^ ctr).to_bytes(self.aead.params.nn, "big")


class SendKey:
    """One sender's key under one KID; the counter starts at ``ctr`` and only grows."""

    def __init__(
        self, kid: int, base_key: bytes, suite: CipherSuite = DEFAULT_SUITE, ctr: int = 0
    ) -> None:
        self._state = _KeyState(suite, kid, base_key)
        self.kid = kid
        self.ctr = ctr

    def protect(self, plaintext: bytes, metadata: bytes = b"") -> bytes:
        """``header || AEAD(plaintext)``, authenticating the header and ``metadata``."""
        ctr = self.ctr
        if ctr > MAX_VALUE:
            raise CounterExhaustedError("the frame counter is exhausted")
        self.ctr = ctr + 1
        header = encode_header(self.kid, ctr)
        return header + self._state.aead.seal(self._state.nonce(ctr), header + metadata, plaintext)


class _ReplayWindow:
    """Highest counter seen and a bitmap of the ``size`` counters below it."""

    __slots__ = ("bits", "highest", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.highest = -1
        self.bits = 0  # bit i: counter highest - i was accepted

    def check(self, ctr: int) -> None:
        if ctr > self.highest:
            return
        offset = self.highest - ctr
        if offset >= self.size or self.bits >> offset & 1:
            raise ReplayError(f"counter {ctr} replayed or older than the window")

    def accept(self, ctr: int) -> None:
        if ctr > self.highest:
            shift = ctr - self.highest
            self.bits = ((self.bits << shift) | 1) & ((1 << self.size) - 1)
            self.highest = ctr
        else:
            self.bits |= 1 << (self.highest - ctr)


class Context:
    """Receive keys by KID; :meth:`unprotect` authenticates, decrypts, checks replay."""

    def __init__(self, suite: CipherSuite = DEFAULT_SUITE, window: int = DEFAULT_WINDOW) -> None:
        self.suite = suite
        self.window = window
        self._keys: dict[int, tuple[_KeyState, _ReplayWindow]] = {}

    def add_key(self, kid: int, base_key: bytes) -> None:
        """Install (or replace) the receive key for ``kid``."""
        self._keys[kid] = (_KeyState(self.suite, kid, base_key), _ReplayWindow(self.window))

    def remove_key(self, kid: int) -> None:
        """Forget ``kid``; later frames under it raise UnknownKeyError."""
        self._keys.pop(kid, None)

    def has_key(self, kid: int) -> bool:
        return kid in self._keys

    @property
    def kids(self) -> list[int]:
        return list(self._keys)

    def clear(self) -> None:
        """Drop every key (end of call)."""
        self._keys.clear()

    def unprotect(self, data: bytes, metadata: bytes = b"") -> Unprotected:
        """Plaintext of one SFrame ciphertext, or a typed SFrameError."""
        header = decode_header(data)
        entry = self._keys.get(header.kid)
        if entry is None:
            raise UnknownKeyError(f"no key for KID {header.kid}")
        state, window = entry
        window.check(header.ctr)
        if len(data) - len(header.raw) < state.aead.params.nt:
            raise TruncatedError("SFrame ciphertext shorter than its tag")
        plaintext = state.aead.open(
            state.nonce(header.ctr), header.raw + metadata, data[len(header.raw) :]
        )
        window.accept(header.ctr)
        return Unprotected(header.kid, header.ctr, metadata, plaintext)
