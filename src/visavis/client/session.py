"""A signed-in device: its WebSocket to signaling, kept up, and the calls it takes part in.

    session = await Session.login("https://calls.example.com", "bot@example.com", "secret")
    async with session.events() as events:
        async for event in events:
            if isinstance(event, CallIncoming):
                call = await session.answer(event.call_id, MediaSource.file("hello.mp4"))

Theory of operation. One supervisor task owns the WebSocket: it connects, sends ``hello``
(with ``resume_after`` = the last ``seq`` processed once there was a first ``welcome``),
then reads until the socket closes, and reconnects with a growing back-off (0.2 s to 5 s)
until :meth:`Session.close`. Close codes 4401 (bad or revoked token) and 4409 (replaced by
a newer connection of this device) are final. Requests wait for the ``result``/``error``
with their ``id``; a lost connection fails them with :class:`NotConnected`. Events with a
``seq`` are processed once (duplicates after a resume are skipped) and acknowledged.
Every event goes to each open :class:`EventStream` and, when it names a call this device
takes part in, to that :class:`~visavis.client.call.Call`.

Network choices for calls live here because they belong to the device's network, not to
one call: the ICE servers from ``welcome`` (fresh TURN credentials on every connection),
which TURN transport to use (aioice supports a single TURN server per connection, so
``turn_transport="auto"`` probes UDP to our STUN server once per connection and falls back
to TURN over TCP when UDP gets no answer), and optionally which host addresses ICE may use.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import httpx
import websockets
from aiortc import RTCIceServer
from pydantic import TypeAdapter, ValidationError
from websockets.asyncio.client import ClientConnection

from visavis.client.call import Call, CallStateChanged, FrameCallback
from visavis.client.errors import AuthError, NotConnected, RequestError
from visavis.client.ice import choose_ice_servers, probe_udp
from visavis.client.media import MediaSource
from visavis.e2ee.identity import DeviceIdentity, Pins
from visavis.signaling import messages as m

log = logging.getLogger("visavis.client")

ACK_DELAY = 0.3  # seconds, as the web client
REQUEST_TIMEOUT = 10.0
BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)
FINAL_CLOSE_CODES = {4401: "token refused", 4409: "replaced by a newer connection"}
MAX_EARLY_CALLS = 64
MAX_EARLY_EVENTS = 64

_server_message: TypeAdapter[m.ServerMessage] = TypeAdapter(m.ServerMessage)


@dataclass(frozen=True)
class Connected:
    """The device connection is up. ``resumed=False`` after a reconnect: events were lost."""

    resumed: bool
    reconnect: bool


@dataclass(frozen=True)
class Disconnected:
    """The device connection dropped; ``final`` when it will not reconnect by itself."""

    reason: str
    final: bool


SessionEvent = m.ServerEvent | Connected | Disconnected | CallStateChanged


class EventStream:
    """The session's events from the moment this stream was opened, in order.

    Iterate with ``async for``; close it (or use ``async with``) when done.
    """

    def __init__(self, session: Session) -> None:
        self._session = session
        self._queue: asyncio.Queue[SessionEvent | None] = asyncio.Queue()
        session._streams.add(self)

    def _put(self, event: SessionEvent | None) -> None:
        self._queue.put_nowait(event)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> SessionEvent:
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event

    async def next(
        self, kind: type[Any] | tuple[type[Any], ...] | None = None, within: float | None = None
    ) -> Any:
        """The next event (of ``kind`` when given: others are skipped) within ``within`` seconds."""

        async def find() -> SessionEvent:
            async for event in self:
                if kind is None or isinstance(event, kind):
                    return event
            raise NotConnected("the session was closed")

        return await asyncio.wait_for(find(), within)

    def close(self) -> None:
        self._session._streams.discard(self)
        self._queue.put_nowait(None)

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Session:
    """One device connected to signaling.

    :param url: signaling base URL, e.g. ``https://calls.example.com``.
    :param token: the device token from :meth:`login`.
    :param host_addresses: restrict ICE host candidates to these local addresses
        (``["127.0.0.1"]`` for calls on one machine); default: every interface.
    :param turn_transport: ``"auto"`` (UDP if our STUN server answers over UDP, else TCP),
        ``"udp"``, ``"tcp"`` or ``"tls"`` (``turns:``, for networks that pass only TLS).
    :param ice_transport_policy: ``"relay"`` forces media through TURN.
    :param setup_timeout: seconds from answer to a working media path before a call fails.
    :param relay_grace: seconds a controlling ICE agent holds back checks on relay pairs so
        that a working direct path wins (see :mod:`visavis.client.ice`); 0 disables it.
    :param marker_jitter_buffer: complete received video frames on their RTP marker bit
        instead of when the next frame starts (saves one frame interval of latency, see
        :mod:`visavis.client.latency`); False keeps aiortc's buffer as it is.
    :param media_timeout: seconds without any packet from the peer on a connected call
        before it counts as a broken path and is renegotiated (ICE restart); 0 disables.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        host_addresses: list[str] | None = None,
        turn_transport: Literal["auto", "udp", "tcp", "tls"] = "auto",
        ice_transport_policy: Literal["all", "relay"] = "all",
        setup_timeout: float = 20.0,
        relay_grace: float = 2.0,
        reconnect: bool = True,
        marker_jitter_buffer: bool = True,
        media_timeout: float = 3.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.host_addresses = host_addresses
        self.turn_transport = turn_transport
        self.ice_transport_policy = ice_transport_policy
        self.setup_timeout = setup_timeout
        self.relay_grace = relay_grace
        self.marker_jitter_buffer = marker_jitter_buffer
        self.media_timeout = media_timeout
        self.reconnect = reconnect
        self.welcome: m.Welcome | None = None
        self.calls: dict[str, Call] = {}
        # Set by visavis.client.e2ee.enable_e2ee: 1:1 calls then sign and check DTLS
        # fingerprints with this device identity, pinning contacts' keys in ``pins``.
        self.identity: DeviceIdentity | None = None
        self.pins: Pins | None = None
        self.udp_ok: bool | None = None
        self._streams: set[EventStream] = set()
        self._ws: ClientConnection | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._first: asyncio.Future[m.Welcome] | None = None
        self._answers: dict[str, asyncio.Future[m.Result]] = {}
        self._ids = itertools.count(1)
        self._last_seq: int | None = None
        self._acker: asyncio.Task[None] | None = None
        self._early: dict[str, deque[m.ServerEvent]] = {}
        self._closed = False
        self._up = asyncio.Event()

    # ------------------------------------------------------------------ signing in
    @classmethod
    async def login(
        cls,
        url: str,
        handle: str,
        password: str,
        *,
        device_name: str = "visavis-python",
        signup: bool = False,
        display_name: str | None = None,
        connect: bool = True,
        **options: Any,
    ) -> Session:
        """Sign in as a new device (creating the account first with ``signup=True``).

        :returns: a connected session (``connect=False``: call :meth:`connect` yourself).
        :raises AuthError: wrong handle or password, or signup refused.
        """
        base = url.rstrip("/")
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as http:
            if signup:
                body: dict[str, Any] = {"handle": handle, "password": password}
                if display_name:
                    body["display_name"] = display_name
                r = await http.post(f"{base}/api/signup", json=body)
                if r.status_code not in (201, 409):
                    raise AuthError(*_error_of(r))
            r = await http.post(
                f"{base}/api/login",
                json={
                    "handle": handle,
                    "password": password,
                    "device_name": device_name,
                    "device_kind": "bot",
                },
            )
            if r.status_code != 200:
                raise AuthError(*_error_of(r))
        session = cls(base, r.json()["token"], **options)
        if connect:
            await session.connect()
        return session

    @property
    def handle(self) -> str:
        return self.welcome.user.handle if self.welcome else ""

    @property
    def device_id(self) -> str:
        return self.welcome.device_id if self.welcome else ""

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    # ------------------------------------------------------------------ connection
    async def connect(self, within: float = REQUEST_TIMEOUT) -> m.Welcome:
        """Open the device connection; it then stays up (reconnecting) until :meth:`close`.

        :raises AuthError: the token was refused. :raises NotConnected: no server answered.
        """
        if self._supervisor is None:
            self._first = asyncio.get_running_loop().create_future()
            self._supervisor = asyncio.create_task(self._supervise(), name="visavis-session")
        assert self._first is not None
        try:
            return await asyncio.wait_for(asyncio.shield(self._first), within)
        except TimeoutError as exc:
            raise NotConnected(f"no welcome from {self.url} within {within} s") from exc

    async def _supervise(self) -> None:
        attempt = 0
        reconnect = False
        while not self._closed:
            reason = "connection lost"
            try:
                ws = await websockets.connect(
                    self.url.replace("http", "ws", 1) + "/ws",
                    max_size=1 << 20,
                    open_timeout=REQUEST_TIMEOUT,
                    ping_interval=10,
                    ping_timeout=10,
                )
                try:
                    await self._hello(ws, reconnect)
                    attempt = 0
                    reconnect = True
                    await self._read(ws)
                finally:
                    self._went_down()
                    await ws.close()
                code = ws.close_code
                if code in FINAL_CLOSE_CODES:
                    self._publish(Disconnected(FINAL_CLOSE_CODES[code], final=True))
                    return
            except AuthError as exc:
                self._publish(Disconnected(str(exc), final=True))
                if self._first is not None and not self._first.done():
                    self._first.set_exception(exc)
                return
            except (OSError, websockets.WebSocketException, TimeoutError, ValueError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if self._closed:
                return
            if not self.reconnect and reconnect:
                self._publish(Disconnected(reason, final=True))
                return
            self._publish(Disconnected(reason, final=False))
            await asyncio.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
            attempt += 1

    async def _hello(self, ws: ClientConnection, reconnect: bool) -> None:
        hello: dict[str, Any] = {"type": "hello", "token": self.token}
        if self._last_seq is not None:
            hello["resume_after"] = self._last_seq
        await ws.send(json.dumps(hello))
        raw = await asyncio.wait_for(ws.recv(), REQUEST_TIMEOUT)
        try:
            msg = _server_message.validate_json(raw)
        except ValidationError as exc:
            raise ValueError(f"signaling answered hello with {str(raw)[:200]!r}") from exc
        if isinstance(msg, m.Error):
            raise AuthError(msg.code, msg.message)
        if not isinstance(msg, m.Welcome):
            raise ValueError(f"expected welcome, got {msg.type}")
        self.welcome = msg
        if not msg.resumed:
            self._last_seq = msg.head
        self._ws = ws
        if self.turn_transport == "auto":
            self.udp_ok = await probe_udp(msg.ice_servers)
        self._up.set()
        if self._first is not None and not self._first.done():
            self._first.set_result(msg)
        self._publish(Connected(resumed=msg.resumed, reconnect=reconnect))
        if reconnect:
            for call in list(self.calls.values()):
                call._device_reconnected()

    def _went_down(self) -> None:
        self._up.clear()
        if self._acker is not None:
            self._acker.cancel()
        self._ws = None
        for future in self._answers.values():
            if not future.done():
                future.set_exception(NotConnected("the device connection dropped"))
        self._answers.clear()

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            try:
                msg = _server_message.validate_json(raw)
            except ValidationError:
                log.warning("ignoring a message signaling sent that this SDK does not know")
                continue
            if isinstance(msg, m.Result | m.Error | m.Pong):
                future = self._answers.pop(str(msg.re), None) if msg.re is not None else None
                if future is not None and not future.done():
                    if isinstance(msg, m.Error):
                        future.set_exception(RequestError(msg.code, msg.message))
                    elif isinstance(msg, m.Result):
                        future.set_result(msg)
                    else:
                        future.set_result(m.Result(re=msg.re))
                elif isinstance(msg, m.Error):
                    log.warning("signaling error: %s %s", msg.code, msg.message)
                continue
            if isinstance(msg, m.Welcome):
                continue
            if msg.seq:
                if self._last_seq is not None and msg.seq <= self._last_seq:
                    continue  # already processed before a reconnect
                self._last_seq = msg.seq
            self._dispatch(msg)
            if msg.seq and (self._acker is None or self._acker.done()):
                self._acker = asyncio.get_running_loop().create_task(self._ack_soon(ws))

    async def _ack_soon(self, ws: ClientConnection) -> None:
        """Acknowledge the last event processed, ``ACK_DELAY`` after the first unacknowledged
        one: a burst of events (key messages as a 32-person call assembles) costs one ack,
        not one message each against the device's rate limit."""
        await asyncio.sleep(ACK_DELAY)
        if self._last_seq is not None:
            with contextlib.suppress(websockets.WebSocketException):
                await ws.send(json.dumps({"type": "ack", "seq": self._last_seq}))

    def _dispatch(self, event: m.ServerEvent) -> None:
        call_id = getattr(event, "call_id", None)
        call = self.calls.get(call_id) if call_id else None
        if call is not None:
            call._on_event(event)
        elif call_id and not isinstance(event, m.CallIncoming):
            early = self._early.setdefault(call_id, deque(maxlen=MAX_EARLY_EVENTS))
            early.append(event)
            while len(self._early) > MAX_EARLY_CALLS:
                self._early.pop(next(iter(self._early)))
        self._publish(event)

    def _publish(self, event: SessionEvent) -> None:
        for stream in list(self._streams):
            stream._put(event)

    def events(self) -> EventStream:
        """A stream of every event from now on (incoming calls, call progress, connection)."""
        return EventStream(self)

    async def wait_connected(self, within: float | None = None) -> None:
        await asyncio.wait_for(self._up.wait(), within)

    # ------------------------------------------------------------------ requests
    async def request(
        self, type_: str, within: float = REQUEST_TIMEOUT, **fields: Any
    ) -> m.Result:
        """Send a request; return its ``result``.

        :raises RequestError: signaling refused it. :raises NotConnected: no connection.
        """
        ws = self._ws
        if ws is None:
            raise NotConnected("the device connection is down; it reconnects by itself")
        rid = f"r{next(self._ids)}"
        future: asyncio.Future[m.Result] = asyncio.get_running_loop().create_future()
        self._answers[rid] = future
        try:
            await ws.send(json.dumps({"type": type_, "id": rid, **fields}))
            return await asyncio.wait_for(future, within)
        except websockets.WebSocketException as exc:
            raise NotConnected(str(exc)) from exc
        except TimeoutError as exc:
            raise NotConnected(f"no answer to {type_} within {within} s") from exc
        finally:
            self._answers.pop(rid, None)

    async def send_signal(
        self,
        call_id: str,
        *,
        description: dict[str, str] | None = None,
        candidate: dict[str, Any] | None = None,
    ) -> None:
        fields: dict[str, Any] = {"call_id": call_id}
        if description is not None:
            fields["description"] = description
        if candidate is not None:
            fields["candidate"] = candidate
        await self.request("call.signal", **fields)

    def rtc_ice_servers(self) -> list[RTCIceServer]:
        """The ICE servers a new peer connection should use (never a public default)."""
        servers = self.welcome.ice_servers if self.welcome else []
        return choose_ice_servers(servers, self.turn_transport, self.udp_ok)

    # ------------------------------------------------------------------ calls
    async def call(
        self,
        handle: str,
        source: MediaSource | None = None,
        *,
        media: Literal["audio", "video"] = "video",
        record: str | None = None,
        on_frame: FrameCallback | None = None,
    ) -> Call:
        """Ring ``handle``'s devices; returns at once with the call ringing.

        Await :meth:`Call.wait_connected` for media to flow (it raises
        :class:`~visavis.client.errors.CallFailed` with the reason otherwise).
        """
        result = await self.request("call.invite", handles=[handle], media=media)
        assert result.call_id is not None
        call = self._new_call(
            result.call_id, "outgoing", handle, media, source, record=record, on_frame=on_frame
        )
        call._start_outgoing()
        for event in self._early.pop(result.call_id, ()):
            call._on_event(event)
        return call

    async def answer(
        self,
        call: str | m.CallIncoming,
        source: MediaSource | None = None,
        *,
        record: str | None = None,
        on_frame: FrameCallback | None = None,
        end_current: bool = False,
    ) -> Call:
        """Answer a ringing call on this device.

        :raises RequestError: e.g. ``answered_elsewhere`` or ``not_ringing``.
        """
        if isinstance(call, m.CallIncoming):
            call_id, peer, media = call.call_id, call.caller.handle, call.media
        else:
            call_id, peer, media = call, "", "video"
        obj = self._new_call(call_id, "incoming", peer, media, source, record=record,
                             on_frame=on_frame)
        for event in self._early.pop(call_id, ()):
            if isinstance(event, m.CallSignalEvent):
                obj._on_event(event)
        try:
            await self.request("call.answer", call_id=call_id, end_current=end_current)
        except BaseException:
            self.calls.pop(call_id, None)
            await obj._discard()
            raise
        obj._start_incoming()
        return obj

    async def decline(self, call: str | m.CallIncoming) -> None:
        call_id = call.call_id if isinstance(call, m.CallIncoming) else call
        await self.request("call.decline", call_id=call_id)

    async def next_incoming(self, within: float | None = None) -> m.CallIncoming:
        """Wait for the next call that rings this device."""
        async with self.events() as events:
            event: m.CallIncoming = await events.next(m.CallIncoming, within)
            return event

    def _new_call(
        self,
        call_id: str,
        direction: Literal["outgoing", "incoming"],
        peer: str,
        media: str,
        source: MediaSource | None,
        *,
        record: str | None,
        on_frame: FrameCallback | None,
    ) -> Call:
        call = Call(
            self,
            call_id,
            direction,
            peer,
            media=media,
            source=source,
            record=record,
            on_frame=on_frame,
            setup_timeout=self.setup_timeout,
        )
        self.calls[call_id] = call
        return call

    def _forget(self, call: Call) -> None:
        if self.calls.get(call.id) is call:
            del self.calls[call.id]

    def _call_changed(self, event: CallStateChanged) -> None:
        self._publish(event)

    # ------------------------------------------------------------------ closing
    async def close(self) -> None:
        """Hang up every call and close the device connection."""
        for call in list(self.calls.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(call.hangup(), 3)
        self._closed = True
        ws = self._ws
        if ws is not None:
            await ws.close()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._supervisor
            self._supervisor = None
        self._went_down()
        for stream in list(self._streams):
            stream.close()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _error_of(response: httpx.Response) -> tuple[str, str]:
    try:
        body = response.json()
        return str(body.get("code", response.status_code)), str(body.get("message", body))
    except ValueError:
        return str(response.status_code), response.text[:200]


def new_device_name(prefix: str = "visavis-python") -> str:
    return f"{prefix}-{secrets.token_hex(3)}"

