"""Calls: invite, ring every device, answer, decline, cancel, leave, add, handoff.

Theory of operation. A call has participants, one per user. The caller's participant is
``joined`` (on the calling device) from the start; each callee is ``ringing`` with a
deadline. Every transition is a compare-and-set in the store, so when two devices of a
user answer at once, or an answer races the ring timeout, exactly one wins, on one node
or on many. After each transition :meth:`CallService._settle` decides whether the call
goes on:

* never answered: it ends when nobody is ringing any more (declined, no answer) or the
  caller is gone (cancelled);
* answered (``active``): it ends when fewer than two people are in it and nobody rings.

Ring timeouts are deadlines in the store. A sweeper wakes at the earliest deadline this
node knows of, and at least every second for the ones other nodes (or a previous run of
this process) set, so rings expire even after a restart.

Events go to devices through the :class:`~visavis.signaling.hub.Hub` mailboxes. A 1:1
call is peer to peer: SDP and candidates pass between exactly the two joined devices. With
three or more people the call moves to the SFU and every joined device gets a ``call.room``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence

from visavis.clock import Clock
from visavis.fleet.service import Assignment, Fleet, LocalFleet, MoveReason, NoMediaNode
from visavis.protocol.ratelimit import TokenBucket
from visavis.signaling import messages as m
from visavis.signaling.auth import new_id
from visavis.signaling.directory import Directory
from visavis.signaling.errors import SignalingError, forbidden, not_found, too_many
from visavis.signaling.hub import Hub
from visavis.signaling.metrics import SignalingMetrics
from visavis.store.base import (
    Call,
    CallState,
    Device,
    Participant,
    ParticipantState,
    Store,
    User,
)

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 1.0
RINGING: tuple[ParticipantState, ...] = ("ringing",)
IN_CALL: tuple[ParticipantState, ...] = ("joined",)
NOT_HERE: tuple[ParticipantState, ...] = ("missed", "declined", "left", "cancelled")
NOT_ANSWERED: tuple[CallState, ...] = ("ringing",)
LIVE: tuple[CallState, ...] = ("ringing", "active")

RoomJoin = Callable[[Call, User, str, Assignment], m.CallRoom]
PushRing = Callable[[Sequence[Device], m.CallIncoming | m.CallStopRinging], Awaitable[None]]


def _ringing(call_id: str, user_id: str, inviter: str, now: float, deadline: float) -> Participant:
    """A newly invited callee, ringing until ``deadline``."""
    return Participant(
        call_id=call_id,
        user_id=user_id,
        role="callee",
        state="ringing",
        invited_at=now,
        invited_by=inviter,
        ring_deadline=deadline,
    )


# Reactions relayed per device: a burst of 5, then one per 0.75 s (the client sends at most
# 3 at once and one per 1.5 s); buckets of the devices that reacted last are kept.
REACTION_RATE = 1 / 0.75
REACTION_BURST = 5
MAX_REACTION_BUCKETS = 10_000


def caller_joined(call_id: str, user_id: str, device_id: str, now: float) -> Participant:
    """The one who starts a call, in it on ``device_id`` from the start."""
    return Participant(
        call_id=call_id,
        user_id=user_id,
        role="caller",
        state="joined",
        invited_at=now,
        invited_by=user_id,
        device_id=device_id,
        joined_at=now,
    )


class CallService:
    def __init__(
        self,
        *,
        store: Store,
        directory: Directory,
        hub: Hub,
        clock: Clock,
        metrics: SignalingMetrics,
        ring_timeout: float,
        max_participants: int,
        room_join: RoomJoin,
        push_ring: PushRing | None = None,
        fleet: Fleet | None = None,
    ) -> None:
        self.store = store
        self.directory = directory
        self.hub = hub
        self.clock = clock
        self.metrics = metrics
        self.ring_timeout = ring_timeout
        self.max_participants = max_participants
        self.room_join = room_join
        self.push_ring = push_ring
        self.fleet = fleet or LocalFleet(lambda: None)
        self._deadlines: list[float] = []
        self._reaction_buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        # Set by the links service: is this id a guest admitted to that call? (guests get
        # key messages addressed to them; docs/e2ee.md, "Guests")
        self.is_guest_of: Callable[[str, str], Awaitable[bool]] | None = None
        # ... and the admitted guests of a call: a member with a guest is a call, and
        # guests see the call's reactions (docs/effects.md, "Guests").
        self.guests_of: Callable[[Call], Awaitable[list[str]]] | None = None
        self._wake = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="ring-sweeper")

    async def start_fleet(self) -> None:
        """Watch the media plane: rooms of dead or draining SFU nodes move elsewhere."""
        await self.fleet.start(self.room_moved)

    async def close(self) -> None:
        await self.fleet.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    # -- lookups ---------------------------------------------------------------------
    async def _info(self, user_ids: Iterable[str]) -> dict[str, m.UserInfo]:
        users = await self.directory.users(set(user_ids))
        return {
            uid: m.UserInfo(handle=u.handle, display_name=u.display_name)
            for uid, u in users.items()
        }

    async def _devices_of(self, user_id: str) -> list[Device]:
        return await self.directory.devices(user_id)

    async def _call(self, call_id: str) -> Call:
        call = await self.store.get_call(call_id)
        if call is None:
            raise not_found("call_not_found", f"there is no call {call_id}")
        return call

    async def _load(self, call_id: str) -> tuple[Call, list[Participant]]:
        return await self._call(call_id), await self.store.get_participants(call_id)

    @staticmethod
    def _mine(participants: Sequence[Participant], user_id: str) -> Participant | None:
        return next((p for p in participants if p.user_id == user_id), None)

    @staticmethod
    def _in_call_devices(
        participants: Sequence[Participant], *, exclude: str | None = None
    ) -> list[str]:
        return [
            p.device_id
            for p in participants
            if p.state == "joined" and p.device_id is not None and p.device_id != exclude
        ]

    async def _resolve(self, handles: Sequence[str], caller: User) -> list[User]:
        users: list[User] = []
        for handle in dict.fromkeys(handles):
            user = await self.directory.find(handle)
            if user.id == caller.id:
                raise SignalingError("cannot_call_self", "you cannot call yourself")
            if all(u.id != user.id for u in users):
                users.append(user)
        return users

    # -- invite ----------------------------------------------------------------------
    async def invite(self, user: User, device: Device, msg: m.CallInvite) -> str:
        callees = await self._resolve(msg.handles, user)
        if len(callees) + 1 > self.max_participants:
            raise SignalingError(
                "too_many_participants",
                f"a call holds at most {self.max_participants} people",
            )
        now = self.clock.now()
        call_id = new_id()
        group = len(callees) > 1
        if group:  # place the room first: with no media server there is no group call
            await self._assign(call_id)
        call = Call(
            id=call_id,
            initiator_user_id=user.id,
            initiator_device_id=device.id,
            media=msg.media,
            state="ringing",
            topology="sfu" if group else "p2p",
            room_id=call_id if group else None,
            created_at=now,
        )
        deadline = now + self.ring_timeout
        participants = [
            caller_joined(call_id, user.id, device.id, now),
            *(_ringing(call_id, c.id, user.id, now, deadline) for c in callees),
        ]
        await self.store.create_call(call, participants)
        self.metrics.calls_started.labels("group" if group else "1:1").inc()
        self.metrics.calls_live.labels("ringing").inc()
        self._schedule(deadline)
        await self._ring(call, participants, callees, now=now)
        if group:
            await self.hub.deliver([device.id], await self._room_join(call, user, device.id))
        return call_id

    async def _ring(
        self,
        call: Call,
        participants: Sequence[Participant],
        callees: Sequence[User],
        *,
        now: float,
    ) -> None:
        info = await self._info(p.user_id for p in participants)
        listed = [
            m.ParticipantInfo(user=info[p.user_id], state=p.state)
            for p in participants
            if p.user_id in info and p.state in ("joined", "ringing")
        ]
        in_call = self._in_call_devices(participants)
        group = call.topology == "sfu"
        for callee in callees:
            waiting = await self._is_in_other_call(callee.id, call.id)
            ring = m.CallIncoming(
                call_id=call.id,
                caller=info[call.initiator_user_id],
                participants=listed,
                media=call.media,
                group=group,
                call_waiting=waiting,
                ring_deadline=now + self.ring_timeout,
            )
            devices = await self._devices_of(callee.id)
            await self.hub.deliver([d.id for d in devices], ring, origin=now)
            await self.hub.deliver(
                in_call, m.CallRinging(call_id=call.id, user=info[callee.id], devices=len(devices))
            )
            await self._push_asleep(devices, ring)

    async def _push_asleep(
        self, devices: Sequence[Device], event: m.CallIncoming | m.CallStopRinging
    ) -> None:
        """Web Push ``event`` to those of ``devices`` with no live connection."""
        if self.push_ring is None or not devices:
            return
        online = await self.hub.bus.online([d.id for d in devices])
        asleep = [d for d in devices if d.id not in online and d.push_subscription]
        if asleep:
            await self.push_ring(asleep, event)

    async def _stop_ringing(self, devices: Sequence[Device], event: m.CallStopRinging) -> None:
        """Stop the ring on ``devices``; one woken by a push has its notification withdrawn."""
        await self.hub.deliver([d.id for d in devices], event)
        await self._push_asleep(devices, event)

    async def _is_in_other_call(self, user_id: str, call_id: str) -> bool:
        for other in await self.store.live_calls_for_user(user_id):
            if other.id == call_id:
                continue
            mine = self._mine(await self.store.get_participants(other.id), user_id)
            if mine is not None and mine.state == "joined":
                return True
        return False

    # -- answer / decline / cancel / leave -------------------------------------------
    async def answer(self, user: User, device: Device, msg: m.CallAnswer) -> None:
        call, participants = await self._load(msg.call_id)
        mine = self._mine(participants, user.id)
        if mine is None:
            raise forbidden("not_invited", "you were not invited to this call")
        if call.state == "ended":
            raise SignalingError("call_ended", "this call has ended")
        if mine.state == "joined":
            raise SignalingError(
                "answered_elsewhere", "this call was already answered on another device"
            )
        if mine.state != "ringing":
            raise SignalingError("not_ringing", f"you cannot answer: you {mine.state} this call")
        if msg.end_current:
            await self.leave_all(user, except_call=call.id)
        now = self.clock.now()
        won = await self.store.update_participant(
            call.id,
            user.id,
            only_if_state=RINGING,
            state="joined",
            device_id=device.id,
            joined_at=now,
            ring_deadline=None,
        )
        if not won:
            raise SignalingError(
                "answered_elsewhere", "this call was answered, declined or timed out meanwhile"
            )
        if await self.store.update_call(
            call.id, only_if_state=NOT_ANSWERED, state="active", answered_at=now
        ):
            self.metrics.calls_live.labels("ringing").dec()
            self.metrics.calls_live.labels("active").inc()
        others = [d for d in await self._devices_of(user.id) if d.id != device.id]
        await self._stop_ringing(
            others,
            m.CallStopRinging(call_id=call.id, reason="answered_elsewhere", device_id=device.id),
        )
        info = await self._info([user.id])
        await self.hub.deliver(
            self._in_call_devices(participants),
            m.CallParticipant(
                call_id=call.id, user=info[user.id], state="joined", device_id=device.id
            ),
        )
        if call.topology == "sfu":
            await self.hub.deliver([device.id], await self._room_join(call, user, device.id))

    async def decline(self, user: User, device: Device, msg: m.CallDecline) -> None:
        call, participants = await self._load(msg.call_id)
        mine = self._mine(participants, user.id)
        if mine is None:
            raise forbidden("not_invited", "you were not invited to this call")
        if mine.state != "ringing" or not await self.store.update_participant(
            call.id, user.id, only_if_state=RINGING, state="declined", ring_deadline=None
        ):
            raise SignalingError("not_ringing", "this call is not ringing for you")
        others = [d for d in await self._devices_of(user.id) if d.id != device.id]
        await self._stop_ringing(
            others, m.CallStopRinging(call_id=call.id, reason="declined_elsewhere")
        )
        await self._tell_state(call.id, user.id, "declined")
        await self._settle(call.id)

    async def cancel(self, user: User, device: Device, msg: m.CallCancel) -> None:
        call = await self._call(msg.call_id)
        if call.initiator_user_id != user.id:
            raise forbidden("not_caller", "only the caller can cancel a call")
        if call.state != "ringing":
            raise SignalingError(
                "not_ringing", "the call was answered or has ended: leave it instead"
            )
        await self._end(call, "cancelled")

    async def leave(self, user: User, device: Device, msg: m.CallLeave) -> None:
        call, participants = await self._load(msg.call_id)
        mine = self._mine(participants, user.id)
        if mine is None:
            raise forbidden("not_invited", "you are not in this call")
        if mine.state != "joined" or mine.device_id != device.id:
            raise forbidden("not_in_call", "this device is not in this call")
        await self._leave(call.id, user.id, participants)

    async def _leave(self, call_id: str, user_id: str, participants: Sequence[Participant]) -> None:
        if await self.store.update_participant(
            call_id, user_id, only_if_state=IN_CALL, state="left", left_at=self.clock.now()
        ):
            await self._tell_state(call_id, user_id, "left")
            await self._settle(call_id)

    async def leave_all(self, user: User, *, except_call: str | None = None) -> None:
        """Leave every call the user is in (end-and-answer)."""
        for call in await self.store.live_calls_for_user(user.id):
            if call.id == except_call:
                continue
            participants = await self.store.get_participants(call.id)
            mine = self._mine(participants, user.id)
            if mine is not None and mine.state == "joined":
                if mine.device_id:
                    await self.hub.deliver(
                        [mine.device_id], m.CallEnded(call_id=call.id, reason="left")
                    )
                await self._leave(call.id, user.id, participants)

    # -- add / ring again / handoff --------------------------------------------------
    async def _require_in_call(
        self, user: User, device: Device, call_id: str
    ) -> tuple[Call, list[Participant]]:
        call, participants = await self._load(call_id)
        mine = self._mine(participants, user.id)
        if mine is None or mine.state != "joined" or mine.device_id != device.id:
            raise forbidden("not_in_call", "this device is not in this call")
        if call.state == "ended":
            raise SignalingError("call_ended", "this call has ended")
        return call, participants

    async def room(self, user: User, device: Device, call_id: str) -> m.CallRoom:
        """A fresh SFU join token for a device in a group call (tokens are short-lived)."""
        call, _ = await self._require_in_call(user, device, call_id)
        if call.topology != "sfu":
            raise SignalingError("not_group", "this 1:1 call is peer to peer: no room to join")
        return await self._room_join(call, user, device.id)

    async def media_lost(self, user: User, device: Device, msg: m.CallMediaLost) -> None:
        """A device lost the call's SFU. Reports from at least half the call's joined
        devices (two at least, unless fewer are joined) move the room now: one device
        alone cannot move a room away from a healthy node."""
        call, participants = await self._require_in_call(user, device, msg.call_id)
        if call.topology != "sfu":
            raise SignalingError("not_group", "this 1:1 call is peer to peer: no media server")
        joined = [p.device_id for p in participants if p.state == "joined" and p.device_id]
        await self.fleet.report_lost(call.room_id or call.id, msg.url, device.id, joined=joined)

    # -- the room's media server (the fleet) -------------------------------------------
    async def _assign(self, room_id: str) -> Assignment:
        try:
            return await self.fleet.assign(room_id)
        except NoMediaNode as exc:
            raise SignalingError("no_media_server", str(exc)) from exc

    async def _room_join(self, call: Call, user: User, device_id: str) -> m.CallRoom:
        """A join token for the node the call's room is placed on (placing it if new)."""
        assignment = await self._assign(call.room_id or call.id)
        await self.fleet.bind(assignment.room_id, device_id, assignment.placement)
        return self.room_join(call, user, device_id, assignment)

    async def room_moved(self, assignment: Assignment, reason: MoveReason) -> None:
        """The room's node (or one of its legs' nodes) died or is draining and that
        placement now lives on another: every device sent to it gets a token for the new
        node. Nothing else about the call changes (no ring, no participant state, one
        call in history)."""
        call = await self.store.get_call(assignment.room_id)  # rooms are named by call id
        if call is None or call.state == "ended":
            await self.fleet.release(assignment.room_id)
            return
        participants = await self.store.get_participants(call.id)
        users = await self.directory.users([p.user_id for p in participants])
        # A cascaded room's leg moved: only the devices on that leg move (the others'
        # nodes are alive and link to the new one). Devices never bound: all move.
        bound = await self.fleet.bound(assignment.room_id)
        for p in participants:
            if p.device_id and bound.get(p.device_id, assignment.placement) != assignment.placement:
                continue
            if p.state == "joined" and p.device_id and p.user_id in users:
                room = self.room_join(call, users[p.user_id], p.device_id, assignment)
                await self.hub.deliver(
                    [p.device_id],
                    m.CallRoomMoved(
                        call_id=call.id,
                        room_id=room.room_id,
                        url=room.url,
                        token=room.token,
                        reason=reason,
                    ),
                )

    async def add(self, user: User, device: Device, msg: m.CallAdd) -> None:
        call, participants = await self._require_in_call(user, device, msg.call_id)
        users = await self._resolve(msg.handles, user)
        present = {p.user_id: p for p in participants}
        new = [u for u in users if u.id not in present]
        again = [u for u in users if u.id in present and present[u.id].state in NOT_HERE]
        active = sum(1 for p in participants if p.state in ("joined", "ringing"))
        if active + len(new) + len(again) > self.max_participants:
            raise SignalingError(
                "too_many_participants", f"a call holds at most {self.max_participants} people"
            )
        now = self.clock.now()
        deadline = now + self.ring_timeout
        await self.store.add_participants(
            [_ringing(call.id, u.id, user.id, now, deadline) for u in new]
        )
        for u in again:
            await self.store.update_participant(
                call.id, u.id, only_if_state=NOT_HERE, state="ringing", ring_deadline=deadline
            )
        self._schedule(deadline)
        call = await self._maybe_go_group(call, participants, active + len(new) + len(again))
        await self._ring(call, await self.store.get_participants(call.id), [*new, *again], now=now)

    async def ring_again(self, user: User, device: Device, msg: m.CallRingAgain) -> None:
        call, participants = await self._require_in_call(user, device, msg.call_id)
        target = (await self._resolve([msg.handle], user))[0]
        mine = self._mine(participants, target.id)
        if mine is None:
            raise SignalingError("not_invited", f"{target.handle} is not in this call: add them")
        if mine.state not in NOT_HERE:
            raise SignalingError("already_joined", f"{target.handle} is {mine.state}")
        now = self.clock.now()
        deadline = now + self.ring_timeout
        if not await self.store.update_participant(
            call.id, target.id, only_if_state=NOT_HERE, state="ringing", ring_deadline=deadline
        ):
            raise SignalingError("already_joined", f"{target.handle} joined meanwhile")
        self._schedule(deadline)
        await self._ring(call, await self.store.get_participants(call.id), [target], now=now)

    async def _maybe_go_group(
        self, call: Call, participants: Sequence[Participant], size: int
    ) -> Call:
        """A 1:1 call that grows past two people moves to the SFU."""
        if call.topology == "sfu" or size <= 2:
            return call
        await self.store.update_call(call.id, topology="sfu", room_id=call.id)
        call = await self.store.get_call(call.id) or call
        users = await self.directory.users([p.user_id for p in participants])
        for p in participants:
            if p.state == "joined" and p.device_id and p.user_id in users:
                await self.hub.deliver(
                    [p.device_id], await self._room_join(call, users[p.user_id], p.device_id)
                )
        return call

    async def handoff(self, user: User, device: Device, msg: m.CallHandoff) -> None:
        call, participants = await self._load(msg.call_id)
        mine = self._mine(participants, user.id)
        if mine is None or mine.state != "joined" or call.state == "ended":
            raise forbidden("not_in_call", "you are not in this call: answer it instead")
        if mine.device_id == device.id:
            raise SignalingError("already_here", "the call is already on this device")
        if not await self.store.update_participant(
            call.id, user.id, only_if_state=IN_CALL, device_id=device.id
        ):
            raise SignalingError("not_in_call", "you left the call meanwhile")
        if mine.device_id:
            await self.hub.deliver([mine.device_id], m.CallEnded(call_id=call.id, reason="handoff"))
        info = await self._info([user.id])
        await self.hub.deliver(
            self._in_call_devices(participants, exclude=mine.device_id),
            m.CallParticipant(
                call_id=call.id, user=info[user.id], state="handoff", device_id=device.id
            ),
        )
        if call.topology == "sfu":
            await self.hub.deliver([device.id], await self._room_join(call, user, device.id))

    # -- media signaling -------------------------------------------------------------
    async def signal(self, user: User, device: Device, msg: m.CallSignal) -> None:
        if sum(x is not None for x in (msg.description, msg.candidate, msg.screen)) != 1:
            raise SignalingError(
                "invalid_signal", "send exactly one of description, candidate or screen"
            )
        call, participants = await self._require_in_call(user, device, msg.call_id)
        if call.topology != "p2p":
            raise SignalingError("use_sfu", "this is a group call: negotiate with the SFU")
        peers = self._in_call_devices(participants, exclude=device.id)
        if not peers:
            raise SignalingError("no_peer", "nobody else is in the call yet")
        await self.hub.deliver(
            peers,
            m.CallSignalEvent(
                call_id=call.id,
                from_user=user.handle,
                from_device=device.id,
                description=msg.description,
                candidate=msg.candidate,
                screen=msg.screen,
            ),
        )

    async def e2ee(self, user: User, device: Device, msg: m.CallE2ee) -> None:
        """Relay opaque end-to-end key material to devices in the call, as it is."""
        call, participants = await self._require_in_call(user, device, msg.call_id)
        peers = self._in_call_devices(participants, exclude=device.id)
        if msg.to_device is not None:
            guest = self.is_guest_of is not None and await self.is_guest_of(msg.to_device, call.id)
            if msg.to_device not in peers and not guest:
                raise forbidden("not_in_call", "that device is not in this call")
            peers = [msg.to_device]
        if peers:
            await self.hub.deliver(
                peers,
                m.CallE2eeEvent(
                    call_id=call.id,
                    from_user=user.handle,
                    from_device=device.id,
                    payload=msg.payload,
                ),
            )

    async def reaction(self, user: User, device: Device, msg: m.CallReaction) -> None:
        """Relay a sealed reaction to everyone else in the call, rate limited per device
        (a little above what the client itself allows, docs/effects.md)."""
        call, _ = await self._require_in_call(user, device, msg.call_id)
        self.reaction_allowed(device.id)
        event = m.CallReactionEvent(
            call_id=call.id, from_user=user.handle, from_device=device.id, payload=msg.payload
        )
        await self.relay_reaction(call, event)

    def reaction_allowed(self, sender: str) -> None:
        """Take one of ``sender``'s reaction tokens (a device or a guest id), or refuse."""
        now = self.clock.now()
        bucket = self._reaction_buckets.pop(sender, None)
        if bucket is None:
            bucket = TokenBucket(REACTION_RATE, REACTION_BURST, now)
        self._reaction_buckets[sender] = bucket  # most recent last
        while len(self._reaction_buckets) > MAX_REACTION_BUCKETS:
            self._reaction_buckets.popitem(last=False)
        if not bucket.take(1, now):
            raise too_many(
                "reaction_rate_limited", "too many reactions: slow down", 1 / REACTION_RATE
            )

    async def relay_reaction(self, call: Call, event: m.CallReactionEvent) -> None:
        """``event`` to every device in the call and every admitted guest (their
        mailboxes, read with GET /api/guest/e2ee), except its sender."""
        participants = await self.store.get_participants(call.id)
        peers = self._in_call_devices(participants, exclude=event.from_device)
        peers += [g for g in await self._guest_ids(call) if g != event.from_device]
        if peers:
            await self.hub.deliver(peers, event)

    # -- settling and ending ---------------------------------------------------------
    async def _tell_state(self, call_id: str, user_id: str, state: str) -> None:
        """Tell the devices in the call (as they are now) about someone's new state."""
        info = await self._info([user_id])
        await self.hub.deliver(
            self._in_call_devices(await self.store.get_participants(call_id)),
            m.CallParticipant(call_id=call_id, user=info[user_id], state=state),
        )

    async def _settle(self, call_id: str) -> None:
        call, participants = await self._load(call_id)
        if call.state == "ended":
            return
        joined = [p for p in participants if p.state == "joined"]
        ringing = [p for p in participants if p.state == "ringing"]
        if call.state == "ringing":
            caller = self._mine(participants, call.initiator_user_id)
            if caller is None or caller.state != "joined":
                await self._end(call, "cancelled")
            elif not ringing and len(joined) < 2:
                declined = any(p.state == "declined" for p in participants)
                one_to_one = len(participants) == 2
                await self._end(call, "declined" if declined and one_to_one else "no_answer")
        elif not joined or (len(joined) < 2 and not ringing and not await self._guests(call)):
            await self._end(call, "hangup")

    async def _guests(self, call: Call) -> int:
        return len(await self._guest_ids(call))

    async def _guest_ids(self, call: Call) -> list[str]:
        if self.guests_of is None or call.topology != "sfu":
            return []
        return await self.guests_of(call)

    async def _end(self, call: Call, reason: m.EndReason) -> None:
        """End the call (once, whoever races) and release everyone still in or ringing."""
        call_id = call.id
        now = self.clock.now()
        for prior in LIVE:  # one state at a time, so the live-calls gauge knows which ended
            if await self.store.update_call(
                call_id, only_if_state=(prior,), state="ended", ended_at=now, end_reason=reason
            ):
                break
        else:
            return
        self.metrics.calls_ended.labels(reason).inc()
        self.metrics.calls_live.labels(prior).dec()
        if call.room_id is not None or call.topology == "sfu":
            try:
                await self.fleet.release(call.room_id or call_id)
            except Exception:  # the placement expires on its own; the call ends regardless
                log.exception("could not release the room of call %s", call_id)
        for p in await self.store.get_participants(call_id):
            if p.state == "ringing":
                await self.store.update_participant(
                    call_id,
                    p.user_id,
                    only_if_state=RINGING,
                    state="cancelled",
                    ring_deadline=None,
                )
                devices = await self._devices_of(p.user_id)
                stop = "cancelled" if reason == "cancelled" else "ended"
                await self._stop_ringing(devices, m.CallStopRinging(call_id=call_id, reason=stop))
            elif p.state == "joined":
                await self.store.update_participant(
                    call_id, p.user_id, only_if_state=IN_CALL, state="left", left_at=now
                )
                if p.device_id:
                    await self.hub.deliver(
                        [p.device_id],
                        m.CallEnded(call_id=call_id, reason=reason),
                    )

    # -- ring timeouts ---------------------------------------------------------------
    def _schedule(self, deadline: float) -> None:
        self._deadlines.append(deadline)
        self._wake.set()

    async def _sweep_forever(self) -> None:
        while True:
            now = self.clock.now()
            self._deadlines = [d for d in self._deadlines if d > now]
            deadline = min([*self._deadlines, now + SWEEP_INTERVAL])
            self._wake.clear()
            sleeper = asyncio.ensure_future(self.clock.sleep_until(deadline))
            waker = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waker.cancel()
            try:
                await self.expire_rings()
            except self.store.busy_errors:
                # Overload, not a bug: the next sweep (within SWEEP_INTERVAL) catches up.
                log.warning("ring sweep deferred: no database connection free in time")
            except Exception:
                log.exception("ring sweep failed; retrying")

    async def expire_rings(self) -> int:
        """Turn every ring past its deadline into a missed call; return how many."""
        count = 0
        for p in await self.store.expired_rings(self.clock.now()):
            if not await self.store.update_participant(
                p.call_id,
                p.user_id,
                only_if_state=RINGING,
                state="missed",
                ring_deadline=None,
            ):
                continue
            count += 1
            devices = await self._devices_of(p.user_id)
            await self._stop_ringing(
                devices, m.CallStopRinging(call_id=p.call_id, reason="timeout")
            )
            await self._tell_state(p.call_id, p.user_id, "missed")
            await self._settle(p.call_id)
        return count

    # -- reconnect -------------------------------------------------------------------
    async def rering(self, user: User, device: Device) -> None:
        """A device starting fresh gets the rings that are still going for its user."""
        now = self.clock.now()
        for call in await self.store.live_calls_for_user(user.id):
            participants = await self.store.get_participants(call.id)
            mine = self._mine(participants, user.id)
            if mine is None or mine.state != "ringing":
                continue
            info = await self._info(p.user_id for p in participants)
            await self.hub.deliver(
                [device.id],
                m.CallIncoming(
                    call_id=call.id,
                    caller=info[call.initiator_user_id],
                    participants=[
                        m.ParticipantInfo(user=info[p.user_id], state=p.state)
                        for p in participants
                        if p.user_id in info and p.state in ("joined", "ringing")
                    ],
                    media=call.media,
                    group=call.topology == "sfu",
                    call_waiting=await self._is_in_other_call(user.id, call.id),
                    ring_deadline=mine.ring_deadline or now,
                ),
            )
