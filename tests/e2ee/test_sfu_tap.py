"""Real SFU traffic with SFrame on: a tap on every payload the SFU forwards.

Three, then four aiortc participants in one room, keys agreed by CallKeys (pairwise,
signed). The tap records each packet the SFU hands to SRTP (the last point where the
SFU holds it in clear): no chunk of any plaintext frame appears in it, while chunks of
the ciphertext do (so the tap would see plaintext if it were there). The SFU keeps
routing on what stays clear: video starts on keyframes (VP8 keyframe bit) and the loud
participant becomes the dominant speaker (RFC 6464 levels). A frame altered in the SFU
is dropped by the receiver; a participant that left cannot decrypt what follows; one
that joined cannot decrypt what came before.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from tests.e2ee.helpers import Transfer
from visavis.client.sfu_session import PatternTrack, SfuSession, ToneTrack
from visavis.e2ee.frames import Codec, clear_length
from visavis.e2ee.identity import DeviceIdentity
from visavis.e2ee.keys import CallKeys
from visavis.protocol.sframe import Context, decode_header
from visavis.sfu.server import SfuServer
from visavis.sfu.transport import WebRtcTransport

pytestmark = pytest.mark.interop


@dataclass
class Tapped:
    publisher: str
    subscriber: str
    kind: str
    payload: bytes


@dataclass
class Tap:
    sfu: SfuServer
    packets: list[Tapped] = field(default_factory=list)
    tamper_to: str | None = None
    tampered: int = 0

    def record(self, transport: WebRtcTransport, plain: bytes) -> bytes:
        ssrc = int.from_bytes(plain[8:12], "big")
        for room in self.sfu.rooms.values():
            for participant in room.participants.values():
                consumer = participant.consumers_by_ssrc.get(ssrc)
                if consumer is None or consumer.transport is not transport:
                    continue
                offset = 12 + 4 * (plain[0] & 0x0F)
                if plain[0] & 0x10:
                    offset += 4 + 4 * int.from_bytes(plain[offset + 2 : offset + 4], "big")
                subscriber = participant.id
                kind = consumer.producer.kind
                self.packets.append(
                    Tapped(consumer.producer.participant.id, subscriber, kind, plain[offset:])
                )
                if self.tamper_to == subscriber and kind == "audio" and self.tampered < 20:
                    self.tampered += 1
                    altered = bytearray(plain)
                    altered[offset] ^= 0x04  # Opus TOC: a clear, authenticated byte
                    return bytes(altered)
        return plain


class Member:
    def __init__(self, name: str, keys: CallKeys, session: SfuSession) -> None:
        self.name, self.keys, self.session = name, keys, session
        # Chunks (see ``chunks``) of every frame's encrypted part, before and after.
        self.secret: set[bytes] = set()
        self.sealed: set[bytes] = set()
        encrypt = keys.keyring.encrypt

        def spy(codec: Codec, frame: bytes) -> bytes:
            data = encrypt(codec, frame)
            n = clear_length(codec, frame)
            self.secret |= chunks([frame[n:]])
            self.sealed |= chunks([data[n:]])
            return data

        keys.keyring.encrypt = spy  # type: ignore[method-assign]

    @property
    def pid(self) -> str:
        return self.session.participant_id or ""


def frames(a: Member, b: Member, kind: str) -> int:
    return a.session.frames[b.pid][kind]


def chunks(frames: list[bytes], size: int = 12) -> set[bytes]:
    return {f[i : i + size] for f in frames if len(f) >= 2 * size for i in (0, len(f) - size)}


@contextlib.asynccontextmanager
async def group(
    sfu: SfuServer, token: Callable[..., str]
) -> AsyncIterator[tuple[Callable[[str, bool], object], list[Member], Transfer]]:
    net = Transfer()
    directory: dict[str, bytes] = {}
    members: list[Member] = []
    rng = random.Random(99)

    async def join(name: str, loud: bool = False) -> Member:
        identity = DeviceIdentity.generate()
        directory[name] = identity.public
        keys = CallKeys("call-1", name, identity, directory.get, rng=rng.randbytes)
        for other in net.devices.values():
            other.peer_joined(name)
            keys.members.add(other.device_id)
        net.devices[name] = keys
        net.deliver(name, keys.start())
        session = SfuSession(
            sfu.control_url,
            token(name),
            audio=ToneTrack(amplitude=0.9 if loud else 0.0),
            video=PatternTrack(seed=len(members)),
            keyring=keys.keyring,
        )
        member = Member(name, keys, session)
        members.append(member)
        await session.join()
        return member

    try:
        yield join, members, net  # type: ignore[misc]
    finally:
        for m in members:
            await m.session.close()


async def test_sfu_forwards_only_ciphertext_and_keeps_routing(
    sfu: SfuServer, token: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tap = Tap(sfu)
    send = WebRtcTransport.send_rtp
    monkeypatch.setattr(WebRtcTransport, "native_send", False)  # forwarded RTP via send_rtp
    monkeypatch.setattr(
        WebRtcTransport, "send_rtp", lambda self, plain: send(self, tap.record(self, plain))
    )
    async with group(sfu, token) as (join, _members, net):
        alice = await join("alice")  # type: ignore[operator]
        bob = await join("bob")  # type: ignore[operator]
        carol = await join("carol", True)  # type: ignore[operator]  # the loud one, last
        trio = [alice, bob, carol]
        for a in trio:
            for b in trio:
                if a is not b:
                    try:
                        await a.session.wait_for(
                            lambda a=a, b=b: (
                                frames(a, b, "video") >= 5 and frames(a, b, "audio") >= 5
                            ),
                            60,
                        )
                    except TimeoutError:
                        state = {
                            m.name: (m.keys.keyring.stats.__dict__, dict(m.session.frames))
                            for m in trio
                        }
                        raise AssertionError(f"{a.name} <- {b.name}: {state}") from None
            await a.session.wait_for(lambda a=a: a.session.dominant_speaker == carol.pid, 30)
        assert sfu.stats.keyframe_requests > 0

        # The tap: ciphertext chunks are there, plaintext chunks never. Enough distinct
        # frames first: the waits above can end within a second on a quiet machine, and
        # silence and the moving bar repeat, so the sample grows with time, not a count.
        def sample() -> tuple[int, int, int]:
            secret = set().union(*(m.secret for m in trio))
            sealed = set().union(*(m.sealed for m in trio))
            return len(tap.packets), len(secret), len(sealed)

        try:
            await alice.session.wait_for(lambda: min(sample()) > 100, 60)
        except TimeoutError:
            raise AssertionError(f"(packets, secret, sealed) chunks: {sample()}") from None
        forwarded = b"".join(p.payload for p in tap.packets)
        secret = set().union(*(m.secret for m in trio))
        sealed = set().union(*(m.sealed for m in trio))
        assert [c for c in secret if c in forwarded] == []
        assert any(c in forwarded for c in sealed)
        for m in trio:
            assert m.keys.keyring.stats.decrypted > 20
            assert not m.keys.alerts and not m.keys.refused

        # Altered in the SFU: the receiver drops it and goes on decoding.
        tap.tamper_to = bob.pid
        await bob.session.wait_for(lambda: tap.tampered >= 20, 30)
        tap.tamper_to = None
        dropped = bob.keys.keyring.stats.dropped
        await bob.session.wait_for(lambda: dropped["auth"] >= 15, 30)
        heard = frames(bob, alice, "audio")
        await bob.session.wait_for(lambda: frames(bob, alice, "audio") > heard + 10, 30)

        # Carol leaves: alice and bob draw fresh keys; what follows is closed to her.
        await carol.session.close()
        del net.devices["carol"]
        for m in (alice, bob):
            net.deliver(m.name, m.keys.peer_left("carol"))
        fresh = alice.keys.keyring.current
        mark = len(tap.packets)

        def after_leave() -> list[bytes]:
            return [
                p.payload
                for p in tap.packets[mark:]
                if (p.publisher, p.subscriber, p.kind) == (alice.pid, bob.pid, "audio")
                and decode_header(p.payload[1:]).kid == fresh.kid
            ]

        await bob.session.wait_for(lambda: len(after_leave()) >= 10, 30)
        after = after_leave()
        assert [carol.keys.keyring.decrypt(Codec.OPUS, p) for p in after] == [None] * len(after)
        control = Context()
        control.add_key(fresh.kid, fresh.base_key)
        assert all(control.unprotect(p[1:], p[:1]) for p in after)

        # Dave joins: alice and bob ratchet; what came before is closed to him.
        before_join = [
            p.payload
            for p in tap.packets
            if p.publisher == alice.pid
            and p.kind == "audio"
            and decode_header(p.payload[1:]).kid == fresh.kid
        ]
        dave = await join("dave")  # type: ignore[operator]
        assert alice.keys.keyring.current.kid == fresh.kid + 1
        for other in (alice, bob):
            await dave.session.wait_for(
                lambda o=other: frames(dave, o, "video") >= 5 and frames(dave, o, "audio") >= 5,
                60,
            )
        assert [dave.keys.keyring.decrypt(Codec.OPUS, p) for p in before_join] == [None] * len(
            before_join
        )
        assert dave.keys.keyring.stats.dropped["unknown_kid"] >= len(before_join)
        # Bob followed alice's ratchet by himself and still hears her.
        heard = frames(bob, alice, "audio")
        await bob.session.wait_for(lambda: frames(bob, alice, "audio") > heard + 10, 30)
