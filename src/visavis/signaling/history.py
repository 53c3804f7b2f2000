"""Call history as each user sees it: direction, outcome, duration."""

from __future__ import annotations

from collections.abc import Sequence

from visavis.signaling import messages as m
from visavis.store.base import Call, Guest, Participant, User


def _outcome(call: Call, mine: Participant | None, outgoing: bool) -> m.HistoryState:
    """Outgoing: answered if any callee joined, else cancelled, declined (1:1) or missed.
    Incoming: answered if this user joined, declined if they declined, otherwise missed
    (including a caller who hung up before the answer, as phones show it)."""
    if outgoing:
        if call.answered_at is not None:
            return "answered" if call.state == "ended" else "ongoing"
        if call.state != "ended":
            return "ongoing"
        if call.end_reason in ("cancelled", "declined"):
            return "cancelled" if call.end_reason == "cancelled" else "declined"
        return "missed"
    if mine is None:
        return "missed"
    if mine.state in ("joined", "ringing") and call.state != "ended":
        return "ongoing"
    if mine.joined_at is not None:
        return "answered"
    return "declined" if mine.state == "declined" else "missed"


def history_entry(
    user_id: str,
    call: Call,
    participants: Sequence[Participant],
    users: dict[str, User],
    guests: Sequence[Guest] = (),
) -> m.HistoryEntry:
    """Summarise one call for one of its participants (``guests``: those admitted into it
    through a call link)."""
    outgoing = call.initiator_user_id == user_id
    mine = next((p for p in participants if p.user_id == user_id), None)
    start = call.answered_at if outgoing else (mine.joined_at if mine else None)
    end = (mine.left_at if mine else None) or call.ended_at
    return m.HistoryEntry(
        call_id=call.id,
        direction="outgoing" if outgoing else "incoming",
        media=call.media,
        state=_outcome(call, mine, outgoing),
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
        guests=[m.GuestInfo(id=g.id, display_name=g.display_name) for g in guests],
        started_at=call.created_at,
        duration=max(0.0, end - start) if start is not None and end is not None else 0.0,
    )
