"""Real aiortc clients in one SFU room: everyone decodes everyone, speakers, join/leave."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import pytest

from tests.waiting import until
from visavis.client.sfu_session import PatternTrack, SfuSession, ToneTrack
from visavis.sfu.server import SfuServer

TokenFactory = Callable[..., str]

pytestmark = pytest.mark.interop


def frames_from_all(session: SfuSession, others: list[SfuSession], minimum: int = 5) -> bool:
    return all(
        session.frames[o.participant_id]["audio"] >= minimum
        and session.frames[o.participant_id]["video"] >= minimum
        for o in others
        if o.participant_id is not None
    )


@contextlib.asynccontextmanager
async def sessions(
    sfu: SfuServer, token: TokenFactory, names: list[str], loud: str | None = None
) -> AsyncIterator[list[SfuSession]]:
    created: list[SfuSession] = []
    try:
        for index, name in enumerate(names):
            s = SfuSession(
                sfu.control_url,
                token(name),
                audio=ToneTrack(amplitude=0.9 if name == loud else 0.0),
                video=PatternTrack(seed=index),
            )
            created.append(s)
            await s.join()
        yield created
    finally:
        for s in created:
            await s.close()


async def test_four_clients_receive_each_other(sfu: SfuServer, token: TokenFactory) -> None:
    async with sessions(sfu, token, ["alice", "bob", "carol", "dave"], loud="carol") as group:
        for s in group:
            others = [o for o in group if o is not s]
            await s.wait_for(lambda s=s, others=others: frames_from_all(s, others), 20)
        # The loud one becomes dominant and everybody is told.
        carol = group[2].participant_id
        for s in group:
            await s.wait_for(lambda s=s: s.dominant_speaker == carol, 10)
        assert sfu.stats.packets_forwarded > 0
        assert sfu.stats.keyframe_requests > 0


def frame_count(session: SfuSession, other: SfuSession, kind: str = "video") -> int:
    return session.frames[other.participant_id or ""][kind]


async def test_late_joiner_and_leaver(sfu: SfuServer, token: TokenFactory) -> None:
    async with sessions(sfu, token, ["alice", "bob", "carol"]) as group:
        for s in group:
            others = [o for o in group if o is not s]
            await s.wait_for(lambda s=s, others=others: frames_from_all(s, others), 20)
        requests_before = sfu.stats.keyframe_requests
        async with sessions(sfu, token, ["dave"]) as (dave,):
            # The late joiner decodes everyone within a bounded time (keyframes requested
            # for it), and everyone decodes the late joiner after renegotiating.
            await dave.wait_for(lambda: frames_from_all(dave, group), 8)
            for s in group:
                await s.wait_for(lambda s=s: frames_from_all(s, [dave]), 8)
                assert any(e["type"] == "participant_joined" for e in s.events)
            assert sfu.stats.keyframe_requests > requests_before
            # Alice leaves: everyone is told, her streams stop, the others' continue.
            alice, rest = group[0], [*group[1:], dave]
            await alice.close()
            for s in rest:
                await s.wait_for(
                    lambda s=s: any(
                        e["type"] == "participant_left"
                        and e["participant_id"] == alice.participant_id
                        for e in s.events
                    ),
                    5,
                )

            def other(s: SfuSession) -> SfuSession:
                return rest[0] if s is not rest[0] else rest[1]

            async def more_frames(since: dict[int, int], count: int) -> None:
                """Each of ``rest`` decodes ``count`` more frames from another
                participant: the window is counted in media that did flow."""
                for s in rest:
                    await s.wait_for(
                        lambda s=s: frame_count(s, other(s)) >= since[id(s)] + count, 20
                    )

            # Alice's frames already in flight may still land: let media move on first.
            await more_frames({id(s): frame_count(s, other(s)) for s in rest}, 10)
            frozen = {id(s): frame_count(s, alice) for s in rest}
            # Then about a second of the others' frames (30) in which none of hers arrive.
            await more_frames({id(s): frame_count(s, other(s)) for s in rest}, 30)
            for s in rest:
                assert frame_count(s, alice) == frozen[id(s)]


async def test_dead_participant_is_removed(sfu: SfuServer, token: TokenFactory) -> None:
    async with sessions(sfu, token, ["alice", "bob", "carol"]) as group:
        for s in group:
            others = [o for o in group if o is not s]
            await s.wait_for(lambda s=s, others=others: frames_from_all(s, others), 20)
        # Carol's media stops (peer connection gone) but her WebSocket stays open.
        carol = group[2]
        await carol.pc.close()
        for s in group[:2]:
            await s.wait_for(
                lambda s=s: any(
                    e["type"] == "participant_left" and e["reason"] == "timeout" for e in s.events
                ),
                sfu.sfu.dead_timeout + 3,
            )
        assert sfu.stats.participants_removed_dead == 1
        await carol.wait_for(lambda: any(e.get("code") == "removed" for e in carol.errors), 3)


async def test_bad_input_is_dropped_and_counted(sfu: SfuServer, token: TokenFactory) -> None:
    import os
    import socket

    from aioice import stun

    from visavis.protocol.rtp.rtcp import RtcpPli

    async with sessions(sfu, token, ["alice", "bob", "carol"]) as group:
        for s in group:
            others = [o for o in group if o is not s]
            await s.wait_for(lambda s=s, others=others: frames_from_all(s, others), 20)
        before = {o.participant_id: frame_count(group[0], o) for o in group[1:]}
        stats = sfu.stats
        # Garbage from a stranger: random bytes, fake RTP, a STUN request for no one.
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        target = ("127.0.0.1", sfu.media_port)
        for i in range(300):
            sock.sendto(os.urandom(1 + i % 200), target)
            sock.sendto(b"\x80\x60" + os.urandom(60), target)
            if i % 10 == 0:
                await asyncio.sleep(0.002)  # paced: the kernel must not drop them first
        request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
        request.attributes["USERNAME"] = "nobody:me"
        request.add_message_integrity(b"guess")
        sock.sendto(bytes(request), target)
        sock.close()
        # Spoofed datagrams from bob's address: SRTP that fails authentication.
        bob = next(
            p
            for r in sfu.rooms.values()
            for p in r.participants.values()
            if p.id == group[1].participant_id
        )
        addr = bob.transport.address
        assert addr is not None
        for _ in range(50):
            sfu.endpoint.datagram_received(b"\x80\x60" + os.urandom(100), addr)
            sfu.endpoint.datagram_received(b"\x80\xc8" + os.urandom(60), addr)
        # Decrypted-but-wrong input from bob: unknown SSRC, malformed RTCP, a PLI storm.
        now = time.monotonic()
        bob.on_rtp(b"\x80\x60\x00\x01" + b"\x00" * 4 + b"\xde\xad\xbe\xef" + b"x" * 20, now)
        bob.on_rtcp(b"\x80\xc9\x00\x09", now)
        requests = stats.keyframe_requests
        consumer = next(iter(c for c in bob.consumers.values() if c.producer.is_video))
        for _ in range(1000):
            bob.on_rtcp(RtcpPli(1, consumer.ssrc).serialize(), now)

        def handled() -> bool:
            """Every bad input counted, and media from bob and carol moved on meanwhile."""
            d = stats.dropped
            return (
                d["garbage"] >= 500
                and d["stun_unauthenticated"] >= 1
                and d["srtp_auth"] >= 100
                and d["unknown_ssrc"] >= 1
                and d["malformed_rtcp"] >= 1
                and d["rtcp_rate_limited"] >= 500
                and all(
                    frame_count(group[0], o) >= before[o.participant_id] + 10 for o in group[1:]
                )
            )

        await until(handled, "the garbage is counted and media still flows", within=30)
        dropped = stats.dropped
        assert dropped["garbage"] >= 500
        assert dropped["stun_unauthenticated"] >= 1
        assert dropped["srtp_auth"] >= 100
        assert dropped["unknown_ssrc"] >= 1
        assert dropped["malformed_rtcp"] >= 1
        assert dropped["rtcp_rate_limited"] >= 500
        assert stats.keyframe_requests - requests <= 6  # rate-limited toward the publisher
        # Nobody was disturbed: alice still decodes bob and carol, nobody was removed.
        for o in group[1:]:
            assert frame_count(group[0], o) >= before[o.participant_id] + 10
        assert all(len(r.participants) == 3 for r in sfu.rooms.values())
        text = __import__("prometheus_client").generate_latest(sfu.registry).decode()
        assert 'visavis_sfu_dropped_packets_total{reason="srtp_auth"}' in text


@pytest.mark.parametrize("case", ["forged", "expired", "no_join"])
async def test_join_is_authorised(sfu: SfuServer, token: TokenFactory, case: str) -> None:
    import json

    from websockets.asyncio.client import connect

    from visavis.tokens import sign_token

    async with connect(sfu.control_url) as ws:
        if case == "forged":
            bad = sign_token(
                "other-secret", {"room": "r", "user": "u", "device": "d"}, now=0, ttl=1e12
            )
            await ws.send(json.dumps({"type": "join", "token": bad}))
        elif case == "expired":
            await ws.send(json.dumps({"type": "join", "token": token("u", ttl=-10)}))
        else:
            await ws.send(json.dumps({"type": "offer", "sdp": "v=0"}))
        reply = json.loads(await ws.recv())
        assert reply["type"] == "error"
        assert reply["code"] == ("protocol_error" if case == "no_join" else "unauthorized")
        assert {"forged": "signature", "expired": "expired", "no_join": "join"}[case] in (
            reply["message"]
        )
    assert not sfu.rooms


def m_lines(session: SfuSession) -> int:
    description = session.pc.localDescription
    return 0 if description is None else description.sdp.count("\nm=")


async def test_concurrent_joins_keep_m_lines_bounded(sfu: SfuServer, token: TokenFactory) -> None:
    """Everyone joining at once makes the SFU ask each client to renegotiate while its
    offer is under way; a request answered by that offer must not add slots again (it
    did: 26-32 m-lines after a room move). Bound: own 2 + 2 per other participant."""
    names = ["alice", "bob", "carol", "dave", "erin"]
    group = [
        SfuSession(sfu.control_url, token(name), audio=ToneTrack(0.0), video=PatternTrack(seed=i))
        for i, name in enumerate(names)
    ]
    try:
        await asyncio.gather(*(s.join(20) for s in group))
        for s in group:  # video: a room of five forwards only the loudest audio
            others = [o for o in group if o is not s]
            await s.wait_for(
                lambda s=s, others=others: all(frame_count(s, o) >= 3 for o in others), 30
            )
        for s in group:
            assert m_lines(s) <= 2 * len(names), (s.participant_id, m_lines(s))
    finally:
        for s in group:
            await s.close()
