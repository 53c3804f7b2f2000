"""Call links (FaceTime's links): a signed-in user makes a link; people without an
account open it in a browser, give a name and wait in a lobby until someone in the call
admits them.

Theory of operation. A link is a secret token (the store keeps its hash) owned by a user,
with an expiry; its owner can revoke it. The owner opens the link's call with
``call.link_join``: a group call through the SFU holding only the owner at first (the
link remembers it, compare-and-set, so two of the owner's devices agree on one call).
A guest gets a token of its own that opens ``/api/guest`` and nothing else: no device
socket, no contacts, no history, no other call. While waiting, the guest polls it; once
admitted it answers with an SFU join token for the link's call only, in which the guest
is ``guest:<name>/<guest id>``. Guests are not participants of the call in the store: the
call ends, as any group call, when its last signed-in participant leaves, and the guests'
next poll says ``ended``.
"""

from __future__ import annotations

from collections.abc import Sequence

from visavis.clock import Clock
from visavis.signaling import messages as m
from visavis.signaling.auth import hash_token, new_id, new_token
from visavis.signaling.calls import CallService, caller_joined
from visavis.signaling.errors import SignalingError, forbidden, not_found, unauthorized
from visavis.signaling.hub import Hub
from visavis.store.base import Call, CallLink, Device, Guest, GuestState, Store, User

# Guests waiting in one link's lobby at once: more are told to come back later.
MAX_WAITING = 32
WAITING: tuple[GuestState, ...] = ("waiting",)
# A guest in the SFU: no handle contains ":", so a guest cannot pass for an account.
GUEST_PREFIX = "guest:"


def gone(code: str, message: str) -> SignalingError:
    return SignalingError(code, message, status=410)


def link_out(link: CallLink, token: str | None = None) -> m.CallLinkOut:
    return m.CallLinkOut(
        id=link.id,
        media=link.media,
        created_at=link.created_at,
        expires_at=link.expires_at,
        revoked=link.revoked_at is not None,
        call_id=link.call_id,
        token=token,
    )


def guest_info(guest: Guest) -> m.GuestInfo:
    return m.GuestInfo(id=guest.id, display_name=guest.display_name)


class LinkService:
    def __init__(self, *, store: Store, hub: Hub, clock: Clock, calls: CallService) -> None:
        self.store = store
        self.hub = hub
        self.clock = clock
        self.calls = calls

    # -- the owner's side (REST) ---------------------------------------------------------
    async def create(self, user: User, body: m.CallLinkIn) -> m.CallLinkOut:
        now = self.clock.now()
        token = new_token()
        link = CallLink(
            id=new_id(),
            user_id=user.id,
            token_hash=hash_token(token),
            media=body.media,
            created_at=now,
            expires_at=now + body.ttl_hours * 3600,
        )
        await self.store.create_link(link)
        return link_out(link, token)

    async def usable(self, user: User) -> list[m.CallLinkOut]:
        now = self.clock.now()
        links = await self.store.list_links(user.id)
        return [link_out(x) for x in links if x.revoked_at is None and x.expires_at > now]

    async def revoke(self, user: User, link_id: str) -> None:
        """Revoke a link: nobody new gets in; guests still waiting are refused. Guests
        already admitted stay until the call ends."""
        link = await self._owned(user, link_id)
        await self.store.revoke_link(link.id, now=self.clock.now())
        for guest in await self.store.list_guests(link.id):
            if await self.store.update_guest(guest.id, only_if_state=WAITING, state="refused"):
                await self._tell(link, guest, "refused")

    async def _owned(self, user: User, link_id: str) -> CallLink:
        link = await self.store.get_link(link_id)
        if link is None or link.user_id != user.id:
            raise not_found("link_not_found", "you have no call link with this id")
        return link

    # -- the owner's side (device socket) -------------------------------------------------
    async def link_join(self, user: User, device: Device, msg: m.CallLinkJoin) -> str:
        link = await self._owned(user, msg.link_id)
        self._usable(link)
        call = await self._live_call(link)
        if call is None:
            call = await self._start(link, user, device)
        else:
            await self._rejoin(call, user, device)
        await self.hub.deliver([device.id], await self.calls._room_join(call, user, device.id))
        for guest in await self.store.list_guests(link.id):  # who is already waiting
            if guest.state == "waiting":
                await self.hub.deliver([device.id], self._event(link, guest, call.id))
        return call.id

    async def _live_call(self, link: CallLink) -> Call | None:
        if link.call_id is None:
            return None
        call = await self.store.get_call(link.call_id)
        return call if call is not None and call.state != "ended" else None

    async def _start(self, link: CallLink, user: User, device: Device) -> Call:
        now = self.clock.now()
        call_id = new_id()
        await self.calls._assign(call_id)
        call = Call(
            id=call_id,
            initiator_user_id=user.id,
            initiator_device_id=device.id,
            media=link.media,
            state="active",
            topology="sfu",
            room_id=call_id,
            created_at=now,
            answered_at=now,
        )
        owner = caller_joined(call_id, user.id, device.id, now)
        if not await self.store.set_link_call(link.id, call_id, previous=link.call_id):
            raise SignalingError("link_busy", "the link's call started meanwhile: open it again")
        await self.store.create_call(call, [owner])
        self.calls.metrics.calls_started.labels("link").inc()
        self.calls.metrics.calls_live.labels("active").inc()
        return call

    async def _rejoin(self, call: Call, user: User, device: Device) -> None:
        participants = await self.store.get_participants(call.id)
        mine = CallService._mine(participants, user.id)
        if mine is not None and mine.state == "joined":
            if mine.device_id == device.id:
                return
            raise SignalingError("in_call_elsewhere", "you are in this call on another device")
        await self.store.update_participant(
            call.id, user.id, state="joined", device_id=device.id, joined_at=self.clock.now()
        )

    async def admit(self, user: User, device: Device, msg: m.CallAdmit) -> None:
        await self._decide(user, device, msg.call_id, msg.guest_id, "admitted")

    async def refuse(self, user: User, device: Device, msg: m.CallRefuse) -> None:
        await self._decide(user, device, msg.call_id, msg.guest_id, "refused")

    async def _decide(
        self, user: User, device: Device, call_id: str, guest_id: str, state: GuestState
    ) -> None:
        """Admit or refuse a waiting guest: only a device in the link's call may."""
        await self.calls._require_in_call(user, device, call_id)
        guest = await self.store.get_guest(guest_id)
        link = await self.store.get_link(guest.link_id) if guest else None
        if guest is None or link is None or link.call_id != call_id:
            raise not_found("guest_not_found", "nobody with this id waits to join this call")
        if not await self.store.update_guest(
            guest.id, only_if_state=WAITING, state=state, call_id=call_id
        ):
            raise SignalingError("not_waiting", f"{guest.display_name} is no longer waiting")
        await self._tell(link, guest, state)

    # -- the guest's side (REST, no account) ----------------------------------------------
    async def _by_token(self, token: str) -> CallLink:
        link = await self.store.get_link_by_token_hash(hash_token(token))
        if link is None:
            raise not_found("link_not_found", "this call link does not exist: ask for a new one")
        self._usable(link)
        return link

    def _usable(self, link: CallLink) -> None:
        if link.revoked_at is not None:
            raise gone("link_revoked", "this call link was turned off by its owner")
        if link.expires_at <= self.clock.now():
            raise gone("link_expired", "this call link has expired: ask for a new one")

    async def info(self, token: str) -> m.LinkInfoOut:
        link = await self._by_token(token)
        owner = (await self.calls._info([link.user_id]))[link.user_id]
        return m.LinkInfoOut(owner=owner, media=link.media, expires_at=link.expires_at)

    async def arrive(self, token: str, body: m.GuestJoinIn) -> m.GuestJoinOut:
        """A guest gives a name and waits in the lobby; the people in the call (or the
        owner's devices, while no call goes on) are told."""
        link = await self._by_token(token)
        waiting = [g for g in await self.store.list_guests(link.id) if g.state == "waiting"]
        if len(waiting) >= MAX_WAITING:
            raise SignalingError("lobby_full", "too many people are waiting: try again later")
        guest_token = new_token()
        guest = Guest(
            id=new_id(),
            link_id=link.id,
            token_hash=hash_token(guest_token),
            display_name=body.display_name,
            state="waiting",
            created_at=self.clock.now(),
        )
        await self.store.create_guest(guest)
        await self._tell(link, guest, "waiting")
        return m.GuestJoinOut(token=guest_token, guest=guest_info(guest))

    async def guest(self, token: str) -> tuple[Guest, CallLink]:
        guest = await self.store.get_guest_by_token_hash(hash_token(token))
        link = await self.store.get_link(guest.link_id) if guest else None
        if guest is None or link is None:
            raise unauthorized("bad_token", "unknown guest token: open the call link again")
        return guest, link

    async def status(
        self, guest: Guest, link: CallLink, ice_servers: Sequence[m.IceServer]
    ) -> m.GuestStatusOut:
        """The guest's lobby; once admitted, a fresh SFU token for the link's call."""
        owner = (await self.calls._info([link.user_id]))[link.user_id]
        out = m.GuestStatusOut(
            guest=guest_info(guest), state=guest.state, owner=owner, media=link.media
        )
        if guest.state == "waiting":
            self._usable(link)  # revoked or expired while waiting: a clear refusal
        if guest.state != "admitted" or guest.call_id is None:
            return out
        call = await self.store.get_call(guest.call_id)
        if call is None or call.state == "ended":
            return out.model_copy(update={"state": "ended"})
        pseudo = User(
            id=GUEST_PREFIX + guest.id,
            handle=GUEST_PREFIX + guest.display_name,
            display_name=guest.display_name,
            password_hash="",
            created_at=guest.created_at,
        )
        room = await self.calls._room_join(call, pseudo, guest.id)
        return out.model_copy(update={"room": room, "ice_servers": list(ice_servers)})

    # -- the guest's end-to-end key messages (docs/e2ee.md, "Guests") ----------------------
    async def _guest_call(self, guest: Guest) -> Call:
        call = await self.store.get_call(guest.call_id) if guest.call_id else None
        if guest.state != "admitted" or call is None or call.state == "ended":
            raise forbidden("not_in_call", "you are not in this call")
        return call

    async def e2ee_send(self, guest: Guest, body: m.GuestE2eeIn) -> None:
        """Relay a guest's opaque key message to the devices of its call, as it is."""
        call = await self._guest_call(guest)
        peers = CallService._in_call_devices(await self.store.get_participants(call.id))
        if body.to_device is not None:
            if body.to_device not in peers:
                raise forbidden("not_in_call", "that device is not in this call")
            peers = [body.to_device]
        event = m.CallE2eeEvent(
            call_id=call.id,
            from_user=GUEST_PREFIX + guest.display_name,
            from_device=guest.id,
            payload=body.payload,
        )
        await self.hub.deliver(peers, event)

    async def e2ee_read(self, guest: Guest, after: int) -> m.GuestE2eeOut:
        """What the call sent this guest (its mailbox): key messages, and reactions from
        everyone else in the call (both opaque; one reader, since reading acknowledges)."""
        await self._guest_call(guest)
        await self.hub.bus.mailbox_ack(guest.id, after)
        events: list[tuple[int, m.CallE2eeEvent | m.CallReactionEvent]] = []
        for seq, data in await self.hub.bus.mailbox_read(guest.id, after):
            if data.get("type") == "call.e2ee":
                events.append((seq, m.CallE2eeEvent.model_validate(data)))
            elif data.get("type") == "call.reaction":
                events.append((seq, m.CallReactionEvent.model_validate(data)))
        last = events[-1][0] if events else after
        return m.GuestE2eeOut(events=[e for _, e in events], last=last)

    async def reaction(self, guest: Guest, body: m.GuestReactionIn) -> None:
        """Relay a guest's sealed reaction to everyone else in its call (docs/effects.md):
        only while admitted, only to its own call, rate limited like a device's."""
        call = await self._guest_call(guest)
        if body.call_id != call.id:
            raise forbidden("not_in_call", "you are not in this call")
        self.calls.reaction_allowed(guest.id)
        event = m.CallReactionEvent(
            call_id=call.id,
            from_user=GUEST_PREFIX + guest.display_name,
            from_device=guest.id,
            payload=body.payload,
        )
        await self.calls.relay_reaction(call, event)

    async def is_guest_of(self, guest_id: str, call_id: str) -> bool:
        """True if ``guest_id`` is a guest admitted to ``call_id`` (a key message target)."""
        guest = await self.store.get_guest(guest_id)
        return guest is not None and guest.state == "admitted" and guest.call_id == call_id

    async def guests_of(self, call: Call) -> list[str]:
        """The ids of the guests admitted to ``call`` (a link call started by its owner)."""
        for link in await self.store.list_links(call.initiator_user_id):
            if link.call_id == call.id:
                guests = await self.store.list_guests(link.id)
                return [g.id for g in guests if g.state == "admitted" and g.call_id == call.id]
        return []

    async def leave(self, guest: Guest, link: CallLink) -> None:
        if await self.store.update_guest(
            guest.id, only_if_state=("waiting", "admitted"), state="left"
        ):
            await self._tell(link, guest, "left")

    # -- telling the people in the call -------------------------------------------------
    def _event(self, link: CallLink, guest: Guest, call_id: str | None) -> m.CallGuest:
        state = guest.state
        return m.CallGuest(call_id=call_id, link_id=link.id, guest=guest_info(guest), state=state)

    async def _tell(self, link: CallLink, guest: Guest, state: GuestState) -> None:
        call = await self._live_call(link)
        event = self._event(link, guest, call.id if call else None).model_copy(
            update={"state": state}
        )
        if call is not None:
            devices = CallService._in_call_devices(await self.store.get_participants(call.id))
        else:
            devices = [d.id for d in await self.calls._devices_of(link.user_id)]
        await self.hub.deliver(devices, event)
