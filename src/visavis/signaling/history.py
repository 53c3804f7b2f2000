"""Call history as each user sees it: direction, outcome, duration."""

from __future__ import annotations

from collections.abc import Sequence

from visavis.signaling import messages as m
from visavis.store.base import Call, Participant, User


def history_entry(
    user_id: str, call: Call, participants: Sequence[Participant], users: dict[str, User]
) -> m.HistoryEntry:
    """Summarise one call for one of its participants.

    Outgoing: answered if any callee joined; otherwise cancelled, declined (1:1) or
    missed (nobody answered in time). Incoming: answered if this user joined, declined if
    they declined, otherwise missed (including a caller who hung up before the answer, as
    phones show it).
    """
    outgoing = call.initiator_user_id == user_id
    mine = next((p for p in participants if p.user_id == user_id), None)
    state: str
    start: float | None
    if call.state != "ended":
        state = "ongoing"
    if outgoing:
        start = call.answered_at
        if call.state == "ended":
            if call.answered_at is not None:
                state = "answered"
            elif call.end_reason == "cancelled":
                state = "cancelled"
            elif call.end_reason == "declined":
                state = "declined"
            else:
                state = "missed"
    else:
        start = mine.joined_at if mine else None
        if call.state == "ended" or (mine is not None and mine.state != "joined"):
            if mine is not None and mine.joined_at is not None:
                state = "answered"
            elif mine is not None and mine.state == "declined":
                state = "declined"
            elif mine is not None and mine.state in ("missed", "cancelled"):
                state = "missed"
            elif call.state != "ended":
                state = "ongoing"
            else:
                state = "missed"
    end = (mine.left_at if mine and mine.left_at else None) or call.ended_at
    duration = max(0.0, end - start) if start is not None and end is not None else 0.0
    return m.HistoryEntry(
        call_id=call.id,
        direction="outgoing" if outgoing else "incoming",
        media=call.media,
        state=state,  # type: ignore[arg-type]
        participants=[
            m.HistoryParticipant(
                user=m.UserInfo(
                    handle=users[p.user_id].handle, display_name=users[p.user_id].display_name
                ),
                role=p.role,
                state=p.state,
            )
            for p in participants
            if p.user_id in users
        ],
        started_at=call.created_at,
        duration=duration,
    )
