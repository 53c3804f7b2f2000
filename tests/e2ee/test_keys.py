"""Key schedule: pairwise signed key messages, ratchet on join, fresh keys on leave,
substitution detected, verification code, pins (sans-I/O, no network)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.e2ee.helpers import Transfer
from visavis.client.e2ee import announced_identity
from visavis.e2ee.frames import Codec
from visavis.e2ee.identity import DeviceIdentity, Pins, PinStatus, b64, unb64, verification_code
from visavis.e2ee.keys import CallKeys
from visavis.e2ee.ratchet import Keyring, fresh_key, ratchet

FRAME = bytes([0x00]) + bytes(range(1, 200))  # a VP8 keyframe-looking frame


class Room:
    """Devices of one call joined by a Transfer; identities published in a directory."""

    def __init__(self, call_id: str = "call-1") -> None:
        self.call_id = call_id
        self.identities: dict[str, DeviceIdentity] = {}
        self.directory: dict[str, bytes] = {}
        self.net = Transfer()
        self.rng = random.Random(7)

    def _bytes(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def join(self, name: str, fingerprint: str | None = None) -> CallKeys:
        identity = self.identities.setdefault(name, DeviceIdentity.generate())
        self.directory[name] = identity.public
        keys = CallKeys(
            self.call_id,
            name,
            identity,
            self.directory.get,
            fingerprint=fingerprint,
            rng=self._bytes,
        )
        for other in self.net.devices.values():
            other.peer_joined(name)
            keys.members.add(other.device_id)
        self.net.devices[name] = keys
        self.net.deliver(name, keys.start())
        return keys

    def leave(self, name: str) -> CallKeys:
        gone = self.net.devices.pop(name)
        for other in list(self.net.devices.values()):
            self.net.deliver(other.device_id, other.peer_left(name))
        return gone


def can_read(receiver: CallKeys, sender: CallKeys) -> bool:
    data = sender.keyring.encrypt(Codec.VP8, FRAME)
    return receiver.keyring.decrypt(Codec.VP8, data) == FRAME


def test_everyone_reads_everyone_and_the_server_sees_no_key() -> None:
    room = Room()
    seen: list[str] = []
    room.net.tamper = lambda src, dst, payload: seen.append(payload) or payload
    devices = [room.join(name) for name in ("alice", "bob", "carol")]
    for a in devices:
        for b in devices:
            if a is not b:
                assert can_read(a, b)
        assert not a.refused and not a.alerts
    for device in devices:  # no base key crosses signaling in the clear
        assert all(b64(device.keyring.current.base_key) not in p for p in seen)


def test_joiner_cannot_read_earlier_media() -> None:
    room = Room()
    alice, bob = room.join("alice"), room.join("bob")
    before = alice.keyring.encrypt(Codec.VP8, FRAME)
    assert bob.keyring.decrypt(Codec.VP8, before) == FRAME
    carol = room.join("carol")
    assert alice.keyring.current.generation == 1  # ratcheted, not a fresh key
    assert carol.keyring.decrypt(Codec.VP8, before) is None
    assert carol.keyring.stats.dropped["unknown_kid"] == 1
    assert can_read(bob, alice)  # bob follows the ratchet by himself
    assert can_read(carol, alice)


def test_leaver_cannot_read_later_media() -> None:
    room = Room()
    alice, bob, carol = room.join("alice"), room.join("bob"), room.join("carol")
    old_prefix = alice.keyring.current.prefix
    room.leave("carol")
    assert alice.keyring.current.prefix != old_prefix  # a fresh random key
    assert can_read(bob, alice) and can_read(alice, bob)
    assert not can_read(carol, alice) and not can_read(carol, bob)


def test_keys_erased_at_call_end() -> None:
    room = Room()
    alice, bob = room.join("alice"), room.join("bob")
    data = alice.keyring.encrypt(Codec.OPUS, b"\x78audio")
    bob.end()
    assert bob.keyring.context.kids == [] and bob.peers == {}
    assert bob.keyring.decrypt(Codec.OPUS, data) is None


def test_substituted_call_key_stops_the_call() -> None:
    room = Room()
    mallory = CallKeys("call-1", "x", DeviceIdentity.generate(), lambda d: None)

    def swap_eph(src: str, dst: str, payload: str) -> str:
        message = json.loads(payload)
        if message["kind"] == "announce" and src == "bob":
            message["eph"] = b64(mallory.eph_public)
        return json.dumps(message)

    room.net.tamper = swap_eph
    alice, bob = room.join("alice"), room.join("bob")
    assert [a.reason for a in alice.alerts] == ["announce_signature"]
    assert alice.stopped and alice.refused["bad_signature"] == 1
    assert not can_read(alice, bob)
    # Alice tells bob why she stops (signed); a forged alert is refused, not obeyed.
    (told,) = [alice.alert_message(alice.alerts[0])]
    assert told.to_device == "bob"
    forged = json.dumps(dict(json.loads(told.payload), reason="made_up"))
    assert bob.receive("alice", forged) == [] and not bob.stopped
    assert bob.refused["bad_signature"] == 1
    assert bob.receive("alice", told.payload) == []
    assert [(a.reason, a.detail) for a in bob.alerts] == [("peer_alert", "announce_signature")]


def test_substituted_identity_key_changes_the_code_and_the_pin(tmp_path: Path) -> None:
    honest = {"alice": DeviceIdentity.generate().public, "bob": DeviceIdentity.generate().public}
    code = verification_code("call-1", honest)
    assert code == verification_code("call-1", dict(reversed(honest.items())))
    assert len(code.replace(" ", "")) == 20
    swapped = dict(honest, bob=DeviceIdentity.generate().public)
    assert verification_code("call-1", swapped) != code
    assert verification_code("call-2", honest) != code
    pins = Pins(tmp_path / "pins.json")
    assert pins.check("bob@example.com", "d1", honest["bob"]) is PinStatus.NEW
    again = Pins(tmp_path / "pins.json")  # persisted
    assert again.check("bob@example.com", "d1", honest["bob"]) is PinStatus.SAME
    assert again.check("bob@example.com", "d1", swapped["bob"]) is PinStatus.CHANGED
    again.accept("bob@example.com", "d1", swapped["bob"])
    assert again.check("bob@example.com", "d1", swapped["bob"]) is PinStatus.SAME


def test_signed_fingerprint_catches_an_sdp_swap() -> None:
    room = Room()
    alice = room.join("alice", fingerprint="sha-256 AA:BB")
    bob = room.join("bob", fingerprint="sha-256 CC:DD")
    assert alice.check_fingerprint("bob", "sha-256 cc:dd")
    assert bob.check_fingerprint("alice", "sha-256 AA:BB")
    assert not alice.check_fingerprint("bob", "sha-256 EE:FF")  # the server swapped SDP
    assert alice.stopped and alice.alerts[-1].reason == "fingerprint_mismatch"


def test_bad_key_messages_are_refused_and_counted() -> None:
    room = Room()
    alice, bob = room.join("alice"), room.join("bob")
    payload = json.loads(alice._key_for("bob").payload)
    forged = dict(payload, ct=b64(b"\x00" * 56))
    bob.receive("alice", json.dumps(forged))
    bob.receive("alice", json.dumps(dict(payload, call="call-2")))
    bob.receive("alice", "not json")
    bob.receive("alice", json.dumps(dict(payload, **{"from": "carol"})))
    bob.receive("zed", json.dumps(payload))  # not in the call: held, never trusted
    assert bob.refused == {"bad_signature": 1, "other_call": 1, "malformed": 1, "misaddressed": 1}


@pytest.mark.parametrize("steps", [1, 5, 16])
def test_receiver_catches_up_a_few_generations_but_never_back(steps: int) -> None:
    sender, receiver = Keyring(), Keyring()
    receiver.install("alice", sender.current)
    first = sender.current
    for _ in range(steps):
        sender.advance()
    assert receiver.decrypt(Codec.OPUS, sender.encrypt(Codec.OPUS, b"\x01hi")) == b"\x01hi"
    late = Keyring()
    late.install("alice", sender.current)
    old = Keyring()
    old.send = type(old.send)(first.kid, first.base_key)
    assert late.decrypt(Codec.OPUS, old.send.protect(b"x")) is None


def test_ratchet_is_deterministic_and_one_way() -> None:
    key = fresh_key(random.Random(1).randbytes)
    nxt = ratchet(key)
    assert nxt.kid == key.kid + 1 and nxt.base_key != key.base_key
    assert ratchet(key) == nxt


def test_announces_carry_the_identity_key_a_guest_is_known_by() -> None:
    """A guest (call link) has no account to look its key up: its announce's `ik` is its
    key, unverified, and the announce's signature must hold under it; Python announces
    carry `ik` too so that guests can check them. Anything else yields no key."""
    identity = DeviceIdentity.generate()
    keys = CallKeys("call-1", "bot", identity, {"bot": identity.public}.get)
    (announce,) = keys.start()
    assert announced_identity(announce.payload) == identity.public
    guest = DeviceIdentity.generate()
    host = CallKeys("call-1", "host", DeviceIdentity.generate(), {"guest": guest.public}.get)
    host.peer_joined("guest")
    body = json.loads(CallKeys("call-1", "guest", guest, lambda d: None).start()[0].payload)
    assert host.receive("guest", json.dumps(body)) and "guest" in host.peers
    forged = {**body, "ik": b64(DeviceIdentity.generate().public)}  # ik outside the sig:
    other = CallKeys("call-1", "o", DeviceIdentity.generate(), lambda d: unb64(forged["ik"]))
    other.peer_joined("guest")
    assert other.receive("guest", json.dumps(forged)) == [] and other.alerts  # a wrong ik fails
    for bad in (
        "{",
        "[]",
        json.dumps({"kind": "key", "ik": body["ik"]}),
        json.dumps({**body, "ik": "AAAA"}),
    ):
        assert announced_identity(bad) is None
