"""Join someone's call link as a guest, without an account: what a browser does at
``/#join=<token>``, for bots and AI agents.

    guest = await Guest.arrive("https://calls.example.com/#join=TOKEN", "Notes bot")
    status = await guest.admitted(within=300)     # the lobby: until someone lets it in
    call = await guest.join(audio=ToneTrack(), video=PatternTrack())
    await call.sfu.wait_for(lambda: any(call.sfu.frames.values()), 30)
    print(call.e2ee.verification_code)            # compare aloud: nobody here is verified
    await guest.leave()                           # and call.close()

The REST flow of docs/protocol.md ("Call links and guests"): ``POST /api/join/<token>``
knocks (a guest token that opens ``/api/guest`` and nothing else), ``GET /api/guest`` is
polled once a second until a participant admits it (then it carries an SFU token for
this call only) or refuses it; a revoked or expired link is a :class:`GuestError`
(``link_revoked``, ``link_expired``) there as at the door.

End-to-end encryption as the browser's guest does it (docs/e2ee.md, "Guests"): an
Ed25519 identity made for this call only (never stored, never published), key messages
sent with ``POST /api/guest/e2ee`` and read from the guest's mailbox (``GET
/api/guest/e2ee?after=N``, polled once a second), the announce repeated every 5 s so
that members who join later answer it. A guest can look nobody's key up: every identity
key it has is the one the sender's announce carries (``ik``), unverified; the
verification code is the only check. It hears that someone left from the SFU
(``participant_left``): a fresh sender key, as when a device leaves. Reactions in its
mailbox are skipped (the SDK sends and plays none).

Room moves: signaling tells devices (``call.room_moved``), not guests. As the browser's
guest does, a guest whose SFU connection drops asks its lobby for a fresh token (which
names the node the room is on now) and rejoins with the same tracks and keys, after 1,
2 and 3 s (signaling moves a dead node's room within a few seconds; until then the token
still names the dead node).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from aiortc import MediaStreamTrack, RTCIceServer

from visavis.client.e2ee import CallKeysShell
from visavis.client.errors import ClientError
from visavis.client.ice import choose_ice_servers
from visavis.client.sfu_session import SfuSession
from visavis.e2ee.identity import DeviceIdentity
from visavis.e2ee.keys import Alert, Outgoing
from visavis.signaling import messages as m

log = logging.getLogger("visavis.client.guest")

POLL = 1.0  # seconds between two looks at the lobby, and at the mailbox (as the browser)
REANNOUNCE = 5  # mailbox polls between two announces (members who join later answer it)
REJOIN_WAITS = (1.0, 2.0, 3.0)  # seconds before each lobby look after the SFU dropped
HTTP_TIMEOUT = 10.0
JOIN_PREFIX = "#join="


class GuestError(ClientError):
    """Signaling refused the guest: ``code`` as in docs/protocol.md (``link_not_found``,
    ``link_revoked``, ``link_expired``, ``lobby_full``, ``refused``, ``ended``,
    ``not_in_call``...), ``status`` the HTTP status (0 when it was no HTTP error)."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


def parse_link(link: str) -> tuple[str, str]:
    """``(server URL, link token)`` of a call link ``https://host/#join=<token>``."""
    parts = urlsplit(link)
    fragment = "#" + parts.fragment
    if not parts.scheme or not parts.netloc or not fragment.startswith(JOIN_PREFIX):
        raise ValueError(f"not a call link (https://host/{JOIN_PREFIX}<token>): {link!r}")
    token = fragment.removeprefix(JOIN_PREFIX)
    if not token:
        raise ValueError(f"the call link has no token: {link!r}")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}", token


def _refusal(response: httpx.Response) -> GuestError:
    try:
        body = response.json()
        return GuestError(str(body["code"]), str(body["message"]), response.status_code)
    except (ValueError, KeyError, TypeError):
        return GuestError("http_error", f"HTTP {response.status_code}", response.status_code)


class Guest:
    """A guest of one call link: knocks, waits in the lobby, joins the call."""

    def __init__(
        self, server: str, link_token: str, token: str, info: m.GuestInfo, link: m.LinkInfoOut
    ) -> None:
        self.server = server
        self.link_token = link_token
        self.token = token  # the guest's own token (not the link's)
        self.id = info.id
        self.name = info.display_name
        self.link = link  # whose call, audio or video
        self.status: m.GuestStatusOut | None = None
        self.call: GuestCall | None = None
        self._http = httpx.AsyncClient(
            base_url=server,
            timeout=HTTP_TIMEOUT,
            headers={"Authorization": f"Bearer {token}"},
        )

    @classmethod
    async def arrive(cls, link: str, name: str) -> Guest:
        """Knock on the call link ``link`` (``https://host/#join=<token>``) as ``name``:
        the people in its call (or its owner) are told someone waits in the lobby."""
        server, token = parse_link(link)
        async with httpx.AsyncClient(base_url=server, timeout=HTTP_TIMEOUT) as http:
            r = await http.get(f"/api/join/{token}")
            if r.status_code >= 400:
                raise _refusal(r)
            info = m.LinkInfoOut.model_validate(r.json())
            r = await http.post(f"/api/join/{token}", json={"display_name": name})
            if r.status_code >= 400:
                raise _refusal(r)
            out = m.GuestJoinOut.model_validate(r.json())
        return cls(server, token, out.token, out.guest, info)

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        r = await self._http.request(method, path, **kwargs)
        if r.status_code >= 400:
            raise _refusal(r)
        return r

    async def lobby(self) -> m.GuestStatusOut:
        """One look at the lobby (``GET /api/guest``): waiting, admitted (with the room),
        refused, left, or ended."""
        r = await self._request("GET", "/api/guest")
        self.status = m.GuestStatusOut.model_validate(r.json())
        return self.status

    async def admitted(self, within: float = 300.0) -> m.GuestStatusOut:
        """Wait (polling once a second, at most ``within`` seconds) until someone in the
        call admits this guest; its status then carries the room. Raises
        :class:`GuestError` when refused (``refused``), when the link is turned off or
        expires meanwhile (``link_revoked``, ``link_expired``), or when the call is over
        (``ended``); ``TimeoutError`` when nobody decides in time."""
        deadline = time.monotonic() + within
        while True:
            status = await self.lobby()
            if status.state == "admitted" and status.room is not None:
                return status
            if status.state == "refused":
                await self._link_usable()  # turned off meanwhile: say that, not "refused"
                raise GuestError("refused", "someone in the call turned you away")
            if status.state in ("ended", "left"):
                raise GuestError(status.state, "this call is over")
            if time.monotonic() + POLL > deadline:
                raise TimeoutError(f"nobody let {self.name} in within {within:.0f} s")
            await asyncio.sleep(POLL)

    async def _link_usable(self) -> None:
        """Raise the link's own refusal (``link_revoked``, ``link_expired``) if any."""
        r = await self._http.get(f"/api/join/{self.link_token}")
        if r.status_code >= 400:
            raise _refusal(r)

    async def join(
        self,
        *,
        audio: MediaStreamTrack | None = None,
        video: MediaStreamTrack | None = None,
        e2ee: bool = True,
        ice_servers: list[RTCIceServer] | None = None,
        limit: float = 20.0,
    ) -> GuestCall:
        """Join the call this guest was admitted to (after :meth:`admitted`): agree keys
        (unless ``e2ee=False``, which every other participant would refuse to decode),
        then publish ``audio``/``video`` and receive everyone through the SFU. ICE
        servers: those signaling gave the guest, unless ``ice_servers`` says otherwise."""
        status = await self.lobby()  # a fresh SFU token (they are short-lived)
        room = status.room
        if status.state != "admitted" or room is None:
            raise GuestError("not_admitted", "wait until someone in the call lets you in")
        keys = GuestE2ee(self, room.call_id) if e2ee else None
        if keys is not None:
            await keys.start()
        if ice_servers is None:
            ice_servers = choose_ice_servers(status.ice_servers, "auto", None)
        sfu = SfuSession(
            room.url,
            room.token,
            audio=audio,
            video=video,
            ice_servers=ice_servers,
            keyring=keys.keyring if keys is not None else None,
        )
        call = GuestCall(self, room.call_id, sfu, keys)
        if keys is not None:
            sfu.on_participant_left = call._participant_left
        sfu.on_lost = call._lost
        try:
            await sfu.join(limit)
        except BaseException:
            await call.close()
            raise
        self.call = call
        return call

    async def send_e2ee(self, payload: str, to_device: str | None = None) -> None:
        """Relay an opaque key message to the call's devices (or one of them)."""
        body: dict[str, Any] = {"payload": payload}
        if to_device is not None:
            body["to_device"] = to_device
        await self._request("POST", "/api/guest/e2ee", json=body)

    async def mailbox(self, after: int) -> m.GuestE2eeOut:
        """What the call sent this guest after ``after`` (reading acknowledges it)."""
        r = await self._request("GET", "/api/guest/e2ee", params={"after": after})
        return m.GuestE2eeOut.model_validate(r.json())

    async def leave(self) -> None:
        """Leave the call (or the lobby): the others draw fresh keys. Closes the call and
        this guest (once; later calls do nothing)."""
        if self._http.is_closed:
            return
        if self.call is not None:
            await self.call.close()
        with contextlib.suppress(httpx.HTTPError, GuestError):
            await self._request("DELETE", "/api/guest")
        await self._http.aclose()


@dataclass
class GuestCall:
    """The guest in its call: the SFU session and (when encrypted) the keys."""

    guest: Guest
    call_id: str
    sfu: SfuSession
    e2ee: GuestE2ee | None
    rejoins: int = 0
    _rejoin: asyncio.Task[None] | None = None

    def _participant_left(self, participant_id: str) -> None:
        """The SFU says someone left (a guest's only news of it): a fresh key."""
        if self.e2ee is not None:
            device = participant_id.rpartition("/")[2]
            self.e2ee.left_soon(device)

    def _lost(self) -> None:
        """The SFU connection dropped under the guest: rejoin (see the top)."""
        if self._rejoin is None or self._rejoin.done():
            self._rejoin = asyncio.create_task(self._rejoin_room())

    async def _rejoin_room(self) -> None:
        for wait in REJOIN_WAITS:
            await asyncio.sleep(wait)
            try:
                status = await self.guest.lobby()
            except (httpx.HTTPError, GuestError) as error:
                log.debug("guest rejoin: %s", error)
                continue
            if status.room is None:  # the call ended, or the guest is out of it
                return
            try:
                await self.sfu.move(status.room.url, status.room.token)
            except Exception as error:  # the node is still the dead one: try again
                self.sfu.errors.append({"code": "rejoin_failed", "message": str(error)})
                continue
            self.rejoins += 1
            return

    async def close(self) -> None:
        """Leave the SFU room and erase the call's keys."""
        if self._rejoin is not None:
            self._rejoin.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rejoin
        await self.sfu.close()
        if self.e2ee is not None:
            await self.e2ee.close()


class GuestE2ee(CallKeysShell):
    """A guest's end-to-end keys for its call, over its REST mailbox (see the top)."""

    def __init__(
        self,
        guest: Guest,
        call_id: str,
        *,
        on_alert: Callable[[Alert], None] | None = None,
    ) -> None:
        # an identity for this call only: nobody can look a guest up, so nothing to keep
        super().__init__(call_id, guest.id, DeviceIdentity.generate(), on_alert)
        self.guest = guest
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._inbox = asyncio.Lock()  # one event at a time, in order
        self.polls = 0

    async def start(self) -> None:
        """Announce this guest's call key and read the mailbox from now on."""
        await self._send(self.keys.start())
        self._task = asyncio.create_task(self._run(), name=f"guest-e2ee-{self.call_id}")

    async def close(self) -> None:
        """Stop reading and erase the keys."""
        for task in [self._task, *self._tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.keys.end()

    async def _run(self) -> None:
        after = 0
        while not self.stopped:
            await asyncio.sleep(POLL)
            try:
                box = await self.guest.mailbox(after)
            except (httpx.HTTPError, GuestError) as error:
                # the network blinked, or the call is over (403): the lobby poll decides
                log.debug("guest mailbox: %s", error)
                continue
            after = box.last
            self.polls += 1
            async with self._inbox:
                for event in box.events:
                    if isinstance(event, m.CallE2eeEvent) and event.call_id == self.call_id:
                        try:
                            await self._on_message(event)
                        except Exception:  # one bad message never ends the encryption
                            log.exception("guest e2ee message for %s failed", self.call_id)
                await self._check_alerts()
            if self.polls % REANNOUNCE == 0:
                await self._send(self.keys.start())

    def left_soon(self, device: str) -> None:
        """``device`` left (the SFU said so): forget it, in turn with the mailbox."""
        task = asyncio.create_task(self._left(device))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _left(self, device: str) -> None:
        async with self._inbox:
            if device in self.keys.members:
                await self._forget(device)

    async def _learn(self, event: m.CallE2eeEvent) -> bool:
        """A guest can look nobody up: everyone's key is its announce's ``ik``."""
        return self._learn_announced(event)

    async def _deliver(self, message: Outgoing) -> None:
        await self.guest.send_e2ee(message.payload, message.to_device)

    async def _leave(self) -> None:
        """An alert: out of the call (signaling, then the SFU); the caller closes the rest."""
        with contextlib.suppress(httpx.HTTPError, GuestError):
            await self.guest._request("DELETE", "/api/guest")
        if self.guest.call is not None:
            await self.guest.call.sfu.close()


__all__ = ["Guest", "GuestCall", "GuestE2ee", "GuestError", "parse_link"]
