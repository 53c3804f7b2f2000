"""Real aiortc clients in one SFU room: everyone decodes everyone, speakers, join/leave."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

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
