"""Per-call key agreement and sender-key distribution (sans-I/O state machine).

Theory of operation (sequence diagram in docs/e2ee.md). On joining a call a device
makes an ephemeral X25519 key pair and an SFrame sender key (:class:`Keyring`), and
broadcasts an *announce*: its ephemeral public key and, in a 1:1 call, its DTLS
fingerprint, signed with its identity key. A device that sees a new announce checks
the signature against the sender's identity key (which signaling handed out and this
device pinned), ratchets its own sender key if others already hold it, answers with
its own announce (directed) and sends its sender key in a *key* message: AES-GCM under
``HKDF(X25519(eph_a, eph_b), call, from, to)``, signed with the identity key. When a
device leaves, every remaining sender draws a fresh key and sends it to the others.

Signaling carries these messages as opaque text (``payload``) between two devices of
one call: it can drop them but cannot read a sender key or forge a signature. A bad
signature on an announce means the server (or someone) substituted a key: that stops
the call (:class:`Alert`). Key messages with a bad signature, for another call, or from
a device not in the call are refused and counted in ``refused``.

Inputs: :meth:`start`, :meth:`receive`, :meth:`peer_joined`, :meth:`peer_left`,
:meth:`check_fingerprint`, :meth:`end`. Outputs: lists of :class:`Outgoing`, plus
``alerts``. Randomness comes from ``rng``; there is no clock.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from visavis.e2ee.identity import DeviceIdentity, b64, unb64, verify
from visavis.e2ee.ratchet import Keyring, Random, SenderKey
from visavis.protocol.sframe.suites import hkdf

VERSION = 1
MAX_PAYLOAD = 4096
MAX_PENDING = 16


@dataclass(frozen=True)
class Outgoing:
    """Send ``payload`` to ``to_device`` in this call (None: every other device)."""

    to_device: str | None
    payload: str


@dataclass(frozen=True)
class Alert:
    """Something only an attacker explains: the call must stop and the user be told."""

    device: str
    # "announce_signature", "fingerprint_mismatch", "identity_changed", "no_identity",
    # "peer_alert" (the other device stopped the call; detail: its reason)
    reason: str
    detail: str


@dataclass
class _Peer:
    eph: bytes
    fingerprint: str | None
    has_our_key: bool = False


def _signed(*parts: str | bytes) -> bytes:
    """Unambiguous bytes to sign: each part length-prefixed."""
    out = bytearray(b"visavis e2ee v1")
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out += len(data).to_bytes(4, "big") + data
    return bytes(out)


def _raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class CallKeys:
    """One device's end-to-end key state for one call."""

    def __init__(
        self,
        call_id: str,
        device_id: str,
        identity: DeviceIdentity,
        directory: Callable[[str], bytes | None],
        *,
        fingerprint: str | None = None,
        rng: Random = os.urandom,
        keyring: Keyring | None = None,
    ) -> None:
        self.call_id = call_id
        self.device_id = device_id
        self.identity = identity
        self.directory = directory  # device id -> identity public key (pinned), or None
        self.fingerprint = fingerprint
        self.rng = rng
        self.keyring = keyring or Keyring(rng=rng)
        self._eph = X25519PrivateKey.from_private_bytes(rng(32))
        self.eph_public = _raw(self._eph.public_key())
        self.members: set[str] = set()
        self.peers: dict[str, _Peer] = {}
        self._pending: list[tuple[str, str]] = []
        self.alerts: list[Alert] = []
        self.refused: Counter[str] = Counter()
        self.ended = False

    # -- inputs -------------------------------------------------------------------------
    def start(self) -> list[Outgoing]:
        """Our announce, to every device of the call."""
        return [Outgoing(None, self._announce(None))]

    def peer_joined(self, device: str) -> list[Outgoing]:
        """Signaling says ``device`` is in the call: handle what it already sent."""
        self.members.add(device)
        pending, self._pending = self._pending, []
        out: list[Outgoing] = []
        for sender, payload in pending:
            out += self.receive(sender, payload)
        return out

    def peer_left(self, device: str) -> list[Outgoing]:
        """``device`` left (or was removed, or handed off): fresh key for the rest."""
        self.members.discard(device)
        if self.peers.pop(device, None) is None:
            return []
        self.keyring.forget(device)
        self.keyring.rotate()
        return [self._key_for(peer) for peer in self.peers]

    def receive(self, sender: str, payload: str) -> list[Outgoing]:
        """One message from ``sender``'s device (as signaling says); never raises."""
        if self.ended:
            return []
        if sender not in self.members:
            if len(self._pending) < MAX_PENDING:
                self._pending.append((sender, payload))
            else:
                self.refused["not_in_call"] += 1
            return []
        try:
            message = json.loads(payload) if len(payload) <= MAX_PAYLOAD else None
            if not isinstance(message, dict) or message.get("v") != VERSION:
                raise ValueError("malformed")
            if message.get("call") != self.call_id:
                self.refused["other_call"] += 1
                return []
            if message.get("from") != sender or message.get("to") not in (None, self.device_id):
                self.refused["misaddressed"] += 1
                return []
            kind = message.get("kind")
            if kind == "announce":
                return self._on_announce(sender, message)
            if kind == "key":
                self._on_key(sender, message)
                return []
            if kind == "alert":
                self._on_alert(sender, message)
                return []
            raise ValueError("unknown kind")
        except (ValueError, TypeError, KeyError):
            self.refused["malformed"] += 1
            return []

    def check_fingerprint(self, device: str, fingerprint: str) -> bool:
        """1:1 calls: the DTLS fingerprint in ``device``'s SDP must be the one it signed."""
        peer = self.peers.get(device)
        if peer is not None and (peer.fingerprint or "").lower() == fingerprint.lower() != "":
            return True
        self._alert(device, "fingerprint_mismatch", "the SDP fingerprint is not the signed one")
        return False

    def end(self) -> None:
        """The call is over: erase every key."""
        self.ended = True
        self.keyring.erase()
        self.peers.clear()
        self._eph = X25519PrivateKey.generate()  # drop the reference to the call's key

    # -- messages -----------------------------------------------------------------------
    def _announce(self, to: str | None) -> str:
        fp = self.fingerprint or ""
        sig = self.identity.sign(
            _signed("announce", self.call_id, self.device_id, to or "", self.eph_public, fp)
        )
        body: dict[str, Any] = {
            "v": VERSION,
            "kind": "announce",
            "call": self.call_id,
            "from": self.device_id,
            "to": to,
            "eph": b64(self.eph_public),
            # the identity public key, outside the signature: for peers that cannot look
            # it up (guests from call links and their hosts; shown as unverified)
            "ik": b64(self.identity.public),
            "sig": b64(sig),
        }
        if self.fingerprint:
            body["fp"] = self.fingerprint
        return json.dumps(body, separators=(",", ":"))

    def _on_announce(self, sender: str, message: dict[str, Any]) -> list[Outgoing]:
        identity = self.directory(sender)
        eph = unb64(message["eph"])
        fp = message.get("fp") or ""
        to = message.get("to") or ""
        signed = _signed("announce", self.call_id, sender, to, eph, fp)
        if identity is None or not verify(identity, unb64(message["sig"]), signed):
            self.refused["bad_signature"] += 1
            self._alert(sender, "announce_signature", "its call key is not signed by its device")
            return []
        if len(eph) != 32:
            raise ValueError("bad ephemeral key")
        known = self.peers.get(sender)
        if known is not None and known.eph == eph:
            return []  # a repeat
        if any(peer.has_our_key for peer in self.peers.values()):
            self.keyring.advance()  # the newcomer must not read what was sent before
        self.peers[sender] = _Peer(eph, fp or None)
        out = [] if to else [Outgoing(sender, self._announce(sender))]
        return [*out, self._key_for(sender)]

    def _pair_key(self, sender: str, recipient: str, peer_eph: bytes) -> bytes:
        shared = self._eph.exchange(X25519PublicKey.from_public_bytes(peer_eph))
        salt = hashlib.sha256(self.call_id.encode()).digest()
        return hkdf("sha256", shared, salt, _signed("wrap", sender, recipient), 32)

    def _key_for(self, device: str) -> Outgoing:
        peer = self.peers[device]
        key = self.keyring.current
        nonce = self.rng(12)
        aad = _signed("key", self.call_id, self.device_id, device)
        plain = key.kid.to_bytes(8, "big") + key.base_key
        ct = AESGCM(self._pair_key(self.device_id, device, peer.eph)).encrypt(nonce, plain, aad)
        sig = self.identity.sign(_signed("key", self.call_id, self.device_id, device, nonce, ct))
        peer.has_our_key = True
        body = {
            "v": VERSION,
            "kind": "key",
            "call": self.call_id,
            "from": self.device_id,
            "to": device,
            "nonce": b64(nonce),
            "ct": b64(ct),
            "sig": b64(sig),
        }
        return Outgoing(device, json.dumps(body, separators=(",", ":")))

    def _on_key(self, sender: str, message: dict[str, Any]) -> None:
        peer = self.peers.get(sender)
        identity = self.directory(sender)
        if peer is None or identity is None:
            self.refused["no_announce"] += 1
            return
        nonce, ct = unb64(message["nonce"]), unb64(message["ct"])
        signed = _signed("key", self.call_id, sender, self.device_id, nonce, ct)
        if not verify(identity, unb64(message["sig"]), signed):
            self.refused["bad_signature"] += 1
            return
        aad = _signed("key", self.call_id, sender, self.device_id)
        try:
            plain = AESGCM(self._pair_key(sender, self.device_id, peer.eph)).decrypt(nonce, ct, aad)
        except InvalidTag:
            self.refused["undecryptable"] += 1
            return
        if len(plain) != 40:
            raise ValueError("bad key length")
        self.keyring.install(sender, SenderKey(int.from_bytes(plain[:8], "big"), plain[8:]))

    def alert_message(self, alert: Alert) -> Outgoing:
        """Tell the device an alert is about that this one stops the call, and why (signed:
        signaling can drop it, which only ends the call as a leave would, not forge it)."""
        to, reason = alert.device, alert.reason
        sig = self.identity.sign(_signed("alert", self.call_id, self.device_id, to, reason))
        body = {
            "v": VERSION,
            "kind": "alert",
            "call": self.call_id,
            "from": self.device_id,
            "to": to,
            "reason": reason,
            "sig": b64(sig),
        }
        return Outgoing(to, json.dumps(body, separators=(",", ":")))

    def _on_alert(self, sender: str, message: dict[str, Any]) -> None:
        identity = self.directory(sender)
        reason = str(message["reason"])[:64]
        signed = _signed("alert", self.call_id, sender, self.device_id, reason)
        if identity is None or not verify(identity, unb64(message["sig"]), signed):
            self.refused["bad_signature"] += 1
            return
        self._alert(sender, "peer_alert", reason)

    def _alert(self, device: str, reason: str, detail: str) -> None:
        self.alerts.append(Alert(device, reason, detail))

    @property
    def stopped(self) -> bool:
        """True once an alert says the call must stop."""
        return bool(self.alerts)
