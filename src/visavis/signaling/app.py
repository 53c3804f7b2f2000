"""The signaling ASGI application: REST for accounts and history, one WebSocket per device."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Header, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from visavis.bus.base import Bus
from visavis.clock import Clock
from visavis.protocol.ratelimit import TokenBucket
from visavis.signaling import messages as m
from visavis.signaling.auth import PasswordsBusy, PasswordWorkers, hash_token, new_id, new_token
from visavis.signaling.calls import CallService
from visavis.signaling.directory import Directory
from visavis.signaling.errors import (
    SignalingError,
    busy,
    conflict,
    not_found,
    too_many,
    unauthorized,
)
from visavis.signaling.history import history_entry
from visavis.signaling.hub import Connection, Hub
from visavis.signaling.ice import ice_servers_for
from visavis.signaling.links import LinkService
from visavis.signaling.metrics import SignalingMetrics
from visavis.signaling.ratelimit import (
    Buckets,
    ConcurrencyLimit,
    SignInThrottle,
    key_bucket,
)
from visavis.signaling.web import WEB_DIR, web_client
from visavis.store.base import CallLink, Device, Guest, HandleTaken, Store, User

log = logging.getLogger(__name__)
T = TypeVar("T")

HELLO_TIMEOUT = 10.0
# WebSocket close codes (4000-4999 are the application's).
CLOSE_UNAUTHORIZED = 4401
CLOSE_PROTOCOL = 4400
CLOSE_TRY_AGAIN_LATER = 1013  # RFC 6455 7.4.1: the server is overloaded
OVERLOADED = "overloaded"
OVERLOADED_MESSAGE = "the server is at capacity: retry in a second"


@dataclass
class SignalingContext:
    """Everything the handlers need, built by :class:`~visavis.signaling.server.SignalingServer`."""

    store: Store
    bus: Bus
    directory: Directory
    hub: Hub
    calls: CallService
    clock: Clock
    metrics: SignalingMetrics
    secret: str
    ice_urls: Callable[[], list[str]]  # asked per device: healthy relays change
    turn_ttl: int
    max_message_bytes: int
    rate_per_second: float
    rate_burst: int
    max_participants: int = 32
    vapid_public_key: str | None = None
    web_dir: str | None = None
    ready_checks: list[Callable[[], Awaitable[bool]]] = field(default_factory=list)
    passwords: PasswordWorkers = field(default_factory=PasswordWorkers)
    throttle: SignInThrottle = field(
        default_factory=lambda: SignInThrottle(
            failures_per_address=20, failures_per_handle=5, signups_per_address=100
        )
    )
    admission: ConcurrencyLimit = field(default_factory=lambda: ConcurrencyLimit(64))
    links: LinkService = field(init=False)

    def __post_init__(self) -> None:
        self.links = LinkService(store=self.store, hub=self.hub, clock=self.clock, calls=self.calls)
        self.calls.is_guest_of = self.links.is_guest_of
        self.calls.guests_of = self.links.guests_of


class OverloadGuard:
    """ASGI middleware: ``/api/`` requests beyond ``max_concurrent_requests`` get 503
    ``overloaded`` with Retry-After at once (health checks, metrics and the web client's
    files are never refused), and so does one that found no database connection free
    in time (the store's ``busy_errors``), instead of a 500."""

    def __init__(self, app: ASGIApp, ctx: SignalingContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        admission = self.ctx.admission
        if not admission.enter():
            await self._refuse("limit", scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except self.ctx.store.busy_errors:
            if started:
                raise
            await self._refuse("database_pool", scope, receive, send)
        finally:
            admission.leave()

    async def _refuse(self, reason: str, scope: Scope, receive: Receive, send: Send) -> None:
        self.ctx.metrics.overloaded.labels("http", reason).inc()
        self.ctx.metrics.rejected.labels(OVERLOADED).inc()
        response = JSONResponse(
            {"code": OVERLOADED, "message": OVERLOADED_MESSAGE},
            status_code=503,
            headers={"Retry-After": "1"},
        )
        await response(scope, receive, send)


def _device_out(device: Device, online: set[str], current: str | None = None) -> m.DeviceOut:
    return m.DeviceOut(
        id=device.id,
        name=device.name,
        kind=device.kind,
        created_at=device.created_at,
        online=device.id in online,
        current=device.id == current,
    )


def _user_out(user: User) -> m.UserOut:
    return m.UserOut(id=user.id, handle=user.handle, display_name=user.display_name)


async def authenticate(ctx: SignalingContext, token: str) -> tuple[User, Device]:
    """The device a token belongs to, and its user; refuses unknown and revoked tokens."""
    device = await ctx.store.get_device_by_token_hash(hash_token(token))
    if device is None:
        ctx.metrics.http_auth_failures.labels("bad_token").inc()
        raise unauthorized("bad_token", "unknown device token: sign in again")
    if device.revoked_at is not None:
        ctx.metrics.http_auth_failures.labels("revoked").inc()
        raise unauthorized("token_revoked", "this device was signed out: sign in again")
    user = await ctx.directory.user(device.user_id)
    if user is None:
        raise unauthorized("bad_token", "the account of this device no longer exists")
    return user, device


async def current_device(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> tuple[User, Device]:
    """FastAPI dependency: the caller's user and device from ``Authorization: Bearer``."""
    ctx: SignalingContext = request.app.state.ctx
    if not authorization or not authorization.lower().startswith("bearer "):
        ctx.metrics.http_auth_failures.labels("missing").inc()
        raise unauthorized("missing_token", "send 'Authorization: Bearer <device token>'")
    return await authenticate(ctx, authorization[7:].strip())


Auth = Annotated[tuple[User, Device], Depends(current_device)]


async def current_guest(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> tuple[Guest, CallLink]:
    """FastAPI dependency: a call link's guest from ``Authorization: Bearer`` (a guest
    token opens /api/guest only; a device token is no guest token, nor the reverse)."""
    ctx: SignalingContext = request.app.state.ctx
    if not authorization or not authorization.lower().startswith("bearer "):
        ctx.metrics.http_auth_failures.labels("missing").inc()
        raise unauthorized("missing_token", "send 'Authorization: Bearer <guest token>'")
    try:
        return await ctx.links.guest(authorization[7:].strip())
    except SignalingError:
        ctx.metrics.http_auth_failures.labels("bad_token").inc()
        raise


GuestAuth = Annotated[tuple[Guest, CallLink], Depends(current_guest)]


def _source(request: Request) -> str:
    """The client's address (uvicorn puts a trusted proxy's X-Forwarded-For here)."""
    return request.client.host if request.client else "unknown"


def _throttled(ctx: SignalingContext, action: str, verdict: tuple[str, float] | None) -> None:
    """Refuse a sign-in or sign-up that must still wait (429 with Retry-After)."""
    if verdict is None:
        return
    scope, wait = verdict
    ctx.metrics.auth_throttled.labels(action, scope).inc()
    what = "failed sign-ins" if action == "login" else "sign-ups"
    where = "from this address" if scope == "address" else "for this handle"
    raise too_many(
        "too_many_attempts",
        f"too many {what} {where}: retry in {max(1, math.ceil(wait))} s",
        retry_after=wait,
    )


async def _password(ctx: SignalingContext, work: Awaitable[T]) -> T:
    """A password hash or check on the worker threads; 503 when they are all taken."""
    try:
        return await work
    except PasswordsBusy as exc:
        ctx.metrics.auth_busy.inc()
        raise busy("auth_busy", "too many sign-ins in progress: retry in a second", 1.0) from exc


def create_app(ctx: SignalingContext) -> FastAPI:
    app = FastAPI(
        title="visavis signaling",
        version="1",
        description="Accounts, devices, presence, calls. Real-time events flow over the "
        "device WebSocket at /ws; see docs/protocol.md.",
    )
    app.state.ctx = ctx
    app.add_middleware(OverloadGuard, ctx=ctx)

    @app.exception_handler(SignalingError)
    async def _signaling_error(_: Request, exc: SignalingError) -> JSONResponse:
        ctx.metrics.rejected.labels(exc.code).inc()
        headers = None
        if exc.retry_after is not None:
            headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
        return JSONResponse(
            {"code": exc.code, "message": exc.message}, status_code=exc.status, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        ctx.metrics.rejected.labels("invalid_request").inc()
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "body"
        return JSONResponse(
            {"code": "invalid_request", "message": f"{where}: {first['msg']}"}, status_code=422
        )

    # -- health --------------------------------------------------------------------
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        checks = {"store": await ctx.store.ping(), "bus": await ctx.bus.ping()}
        for i, check in enumerate(ctx.ready_checks):
            checks[f"check{i}"] = await check()
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- accounts and devices ------------------------------------------------------
    @app.post("/api/signup", status_code=201, response_model=m.UserOut)
    async def signup(body: m.SignupRequest, request: Request) -> m.UserOut:
        address = _source(request)
        now = ctx.clock.now()
        _throttled(ctx, "signup", ctx.throttle.signup_wait(address, now))
        ctx.throttle.signed_up(address, now)
        password_hash = await _password(ctx, ctx.passwords.hash(body.password))
        try:
            user = await ctx.store.create_user(
                user_id=new_id(),
                handle=body.handle,
                display_name=body.display_name or body.handle.split("@")[0],
                password_hash=password_hash,
                now=ctx.clock.now(),
            )
        except HandleTaken as exc:
            raise conflict("handle_taken", f"{body.handle} is already registered") from exc
        return _user_out(user)

    @app.post("/api/login", response_model=m.LoginResponse)
    async def login(body: m.LoginRequest, request: Request) -> m.LoginResponse:
        address = _source(request)
        _throttled(ctx, "login", ctx.throttle.login_wait(address, body.handle, ctx.clock.now()))
        user = await ctx.store.get_user_by_handle(body.handle)
        known = user.password_hash if user else None
        if not await _password(ctx, ctx.passwords.verify(known, body.password)) or not user:
            ctx.metrics.http_auth_failures.labels("password").inc()
            ctx.throttle.login_failed(address, body.handle, ctx.clock.now())
            raise unauthorized("bad_credentials", "wrong handle or password")
        ctx.throttle.login_succeeded(body.handle)
        token = new_token()
        device = await ctx.store.create_device(
            device_id=new_id(),
            user_id=user.id,
            name=body.device_name,
            kind=body.device_kind,
            token_hash=hash_token(token),
            now=ctx.clock.now(),
        )
        await ctx.directory.devices_changed(user.id)
        return m.LoginResponse(
            token=token, user=_user_out(user), device=_device_out(device, set(), device.id)
        )

    @app.get("/api/me", response_model=m.UserOut)
    async def me(auth: Auth) -> m.UserOut:
        return _user_out(auth[0])

    @app.get("/api/devices", response_model=list[m.DeviceOut])
    async def list_devices(auth: Auth) -> list[m.DeviceOut]:
        user, device = auth
        devices = await ctx.directory.devices(user.id)
        online = await ctx.bus.online([d.id for d in devices])
        return [_device_out(d, online, device.id) for d in devices]

    @app.delete("/api/devices/{device_id}", status_code=204)
    async def revoke_device(device_id: str, auth: Auth) -> Response:
        user, _ = auth
        target = await ctx.store.get_device(device_id)
        if target is None or target.user_id != user.id:
            raise not_found("device_not_found", "you have no device with this id")
        await ctx.store.revoke_device(device_id, now=ctx.clock.now())
        await ctx.directory.devices_changed(user.id)
        await ctx.hub.revoke(device_id)
        return Response(status_code=204)

    @app.put("/api/devices/current/push", status_code=204)
    async def set_push(body: m.PushSubscription, auth: Auth) -> Response:
        if not body.endpoint.startswith(("https://", "http://")):
            raise SignalingError("invalid_push_endpoint", "a push endpoint is an http(s) URL")
        await ctx.store.set_push_subscription(auth[1].id, body.model_dump())
        await ctx.directory.devices_changed(auth[0].id)
        return Response(status_code=204)

    @app.put("/api/devices/current/identity", status_code=204)
    async def set_identity(body: m.DeviceKeyIn, auth: Auth) -> Response:
        """Publish this device's identity public key, once: a device keeps its key."""
        stored = await ctx.store.set_device_key(auth[1].id, body.public_key, now=ctx.clock.now())
        if stored != body.public_key:
            raise conflict("identity_set", "this device already has another identity key")
        return Response(status_code=204)

    @app.get("/api/users/{handle}/devices", response_model=list[m.DeviceKeyOut])
    async def contact_devices(handle: str, auth: Auth) -> list[m.DeviceKeyOut]:
        """A contact's devices with their identity public keys (for pinning)."""
        user = await ctx.directory.find(handle)
        devices = await ctx.directory.devices(user.id)
        keys = await ctx.store.get_device_keys([d.id for d in devices])
        return [
            m.DeviceKeyOut(device_id=d.id, name=d.name, public_key=keys[d.id])
            for d in devices
            if d.id in keys
        ]

    @app.get("/api/push/key")
    async def push_key() -> dict[str, str | None]:
        """The VAPID applicationServerKey for pushManager.subscribe()."""
        return {"public_key": ctx.vapid_public_key}

    @app.get("/api/users/{handle}", response_model=m.ContactOut)
    async def find_contact(handle: str, auth: Auth) -> m.ContactOut:
        user = await ctx.directory.find(handle)
        devices = await ctx.directory.devices(user.id)
        online = await ctx.bus.online([d.id for d in devices])
        return m.ContactOut(
            handle=user.handle, display_name=user.display_name, reachable=bool(online)
        )

    @app.get("/api/ice-servers", response_model=m.IceServersOut)
    async def ice_servers(auth: Auth) -> m.IceServersOut:
        return m.IceServersOut(
            ice_servers=ice_servers_for(
                ctx.ice_urls(), ctx.secret, auth[0].id, now=ctx.clock.now(), ttl=ctx.turn_ttl
            ),
            ttl=ctx.turn_ttl,
        )

    @app.get("/api/calls", response_model=list[m.HistoryEntry])
    async def call_history(
        auth: Auth, limit: int = 50, before: float | None = None
    ) -> list[m.HistoryEntry]:
        user = auth[0]
        rows = await ctx.store.call_history(user.id, limit=max(1, min(limit, 200)), before=before)
        users = await ctx.directory.users({p.user_id for _, ps in rows for p in ps})
        guests = await ctx.store.call_guests([call.id for call, _ in rows])
        return [history_entry(user.id, call, ps, users, guests[call.id]) for call, ps in rows]

    @app.get("/api/calls/{call_id}", response_model=m.HistoryEntry)
    async def get_call(call_id: str, auth: Auth) -> m.HistoryEntry:
        user = auth[0]
        call = await ctx.store.get_call(call_id)
        participants = await ctx.store.get_participants(call_id) if call else []
        if call is None or all(p.user_id != user.id for p in participants):
            raise not_found("call_not_found", "you took part in no call with this id")
        users = await ctx.directory.users({p.user_id for p in participants})
        guests = await ctx.store.call_guests([call.id])
        return history_entry(user.id, call, participants, users, guests[call.id])

    @app.post("/api/calls/{call_id}/room", response_model=m.CallRoom)
    async def refresh_room(call_id: str, auth: Auth) -> m.CallRoom:
        """A new SFU join token for this device, while it is in the group call."""
        user, device = auth
        return await ctx.calls.room(user, device, call_id)

    # -- call links: the owner's side ----------------------------------------------
    @app.post("/api/links", status_code=201, response_model=m.CallLinkOut)
    async def create_link(body: m.CallLinkIn, auth: Auth) -> m.CallLinkOut:
        """A new call link; its token is in this answer only."""
        return await ctx.links.create(auth[0], body)

    @app.get("/api/links", response_model=list[m.CallLinkOut])
    async def list_links(auth: Auth) -> list[m.CallLinkOut]:
        """This user's links still usable (neither revoked nor expired), newest first."""
        return await ctx.links.usable(auth[0])

    @app.delete("/api/links/{link_id}", status_code=204)
    async def revoke_link(link_id: str, auth: Auth) -> Response:
        await ctx.links.revoke(auth[0], link_id)
        return Response(status_code=204)

    # -- call links: the guest's side (no account) ------------------------------------
    @app.get("/api/join/{token}", response_model=m.LinkInfoOut)
    async def link_info(token: str) -> m.LinkInfoOut:
        """Whose call a link opens (404 unknown, 410 revoked or expired)."""
        return await ctx.links.info(token)

    @app.post("/api/join/{token}", status_code=201, response_model=m.GuestJoinOut)
    async def guest_arrives(token: str, body: m.GuestJoinIn, request: Request) -> m.GuestJoinOut:
        """Wait in the link's lobby under this name; the answer's token opens /api/guest."""
        address = _source(request)
        now = ctx.clock.now()
        _throttled(ctx, "signup", ctx.throttle.signup_wait(address, now))
        ctx.throttle.signed_up(address, now)
        return await ctx.links.arrive(token, body)

    @app.get("/api/guest", response_model=m.GuestStatusOut)
    async def guest_status(auth: GuestAuth) -> m.GuestStatusOut:
        """A guest's lobby: poll it until admitted (then: the room to join) or refused."""
        guest, link = auth
        ice = ice_servers_for(
            ctx.ice_urls(), ctx.secret, "guest:" + guest.id, now=ctx.clock.now(), ttl=ctx.turn_ttl
        )
        return await ctx.links.status(guest, link, ice)

    @app.post("/api/guest/e2ee", status_code=204)
    async def guest_e2ee_send(body: m.GuestE2eeIn, auth: GuestAuth) -> Response:
        """An admitted guest's end-to-end key message for devices of its call (opaque)."""
        await ctx.links.e2ee_send(auth[0], body)
        return Response(status_code=204)

    @app.get("/api/guest/e2ee", response_model=m.GuestE2eeOut)
    async def guest_e2ee_read(auth: GuestAuth, after: int = 0) -> m.GuestE2eeOut:
        """Key messages and reactions for this guest after sequence number ``after``
        (poll it)."""
        return await ctx.links.e2ee_read(auth[0], after)

    @app.post("/api/guest/reaction", status_code=204)
    async def guest_reaction(body: m.GuestReactionIn, auth: GuestAuth) -> Response:
        """An admitted guest's sealed reaction for everyone else in its call (opaque; 429
        ``reaction_rate_limited`` past a burst of 5, then one per 0.75 s)."""
        await ctx.links.reaction(auth[0], body)
        return Response(status_code=204)

    @app.delete("/api/guest", status_code=204)
    async def guest_leaves(auth: GuestAuth) -> Response:
        await ctx.links.leave(*auth)
        return Response(status_code=204)

    # -- the device WebSocket ------------------------------------------------------

    @app.websocket("/ws")
    async def device_socket(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            session = await _handshake(websocket)
        except (TimeoutError, WebSocketDisconnect):
            return
        except ctx.store.busy_errors:
            ctx.metrics.overloaded.labels("hello", "database_pool").inc()
            await _reject(websocket, OVERLOADED, OVERLOADED_MESSAGE)
            await websocket.close(CLOSE_TRY_AGAIN_LATER)
            return
        if session is None:
            return
        user, device, conn = session
        buckets = Buckets(
            messages=TokenBucket(ctx.rate_per_second, ctx.rate_burst, ctx.clock.now()),
            keys=key_bucket(ctx.max_participants, ctx.clock.now()),
        )
        try:
            while True:
                frame = await websocket.receive()
                if frame["type"] == "websocket.disconnect":
                    break
                await _handle_frame(frame, user, device, conn, buckets)
        except WebSocketDisconnect:
            pass
        finally:
            await ctx.hub.detach(conn)

    async def _reject(
        conn_or_ws: Connection | WebSocket, code: str, message: str, re: str | int | None = None
    ) -> None:
        ctx.metrics.rejected.labels(code).inc()
        error = m.Error(re=re, code=code, message=message)
        if isinstance(conn_or_ws, Connection):
            await conn_or_ws.send(error)
        else:
            await conn_or_ws.send_json(error.model_dump(mode="json"))

    async def _handshake(websocket: WebSocket) -> tuple[User, Device, Connection] | None:
        frame = await asyncio.wait_for(websocket.receive(), HELLO_TIMEOUT)
        if frame["type"] == "websocket.disconnect":
            return None
        try:
            hello = m.client_message_adapter.validate_json(frame.get("text") or "")
        except ValidationError:
            hello = None
        if not isinstance(hello, m.Hello):
            await _reject(websocket, "hello_required", "send {type: 'hello', token} first")
            await websocket.close(CLOSE_PROTOCOL)
            return None
        if not ctx.admission.enter():
            ctx.metrics.overloaded.labels("hello", "limit").inc()
            await _reject(websocket, OVERLOADED, OVERLOADED_MESSAGE, hello.id)
            await websocket.close(CLOSE_TRY_AGAIN_LATER)
            return None
        try:
            return await _start_session(websocket, hello)
        finally:
            ctx.admission.leave()

    async def _start_session(
        websocket: WebSocket, hello: m.Hello
    ) -> tuple[User, Device, Connection] | None:
        """Authenticate, welcome, attach and flush: the database work of a hello."""
        try:
            user, device = await authenticate(ctx, hello.token)
        except SignalingError as exc:
            await _reject(websocket, exc.code, exc.message, hello.id)
            await websocket.close(CLOSE_UNAUTHORIZED)
            return None
        head = await ctx.bus.mailbox_head(device.id)
        resume = hello.resume_after
        if resume is not None and resume <= head:
            pending = await ctx.bus.mailbox_read(device.id, resume)
            resumed = resume == head or (bool(pending) and pending[0][0] == resume + 1)
            last_sent = resume
        else:
            resumed, last_sent = False, head
        conn = Connection(websocket, device.id, last_sent)
        await conn.send(
            m.Welcome(
                user=m.UserInfo(handle=user.handle, display_name=user.display_name),
                device_id=device.id,
                resumed=resumed,
                head=head,
                ice_servers=ice_servers_for(
                    ctx.ice_urls(), ctx.secret, user.id, now=ctx.clock.now(), ttl=ctx.turn_ttl
                ),
            )
        )
        await ctx.hub.attach(conn)
        try:
            if not resumed:  # a fresh start, or events were lost: ring what still rings
                await ctx.calls.rering(user, device)
            await ctx.hub.flush(conn)
        except BaseException:
            await ctx.hub.detach(conn)  # refused (overloaded) or gone: not left attached
            raise
        return user, device, conn

    async def _handle_frame(
        frame: MutableMapping[str, Any],
        user: User,
        device: Device,
        conn: Connection,
        buckets: Buckets,
    ) -> None:
        text = frame.get("text")
        if text is None:
            await _reject(conn, "binary_not_supported", "send JSON text frames")
            return
        if len(text) > ctx.max_message_bytes or len(text.encode()) > ctx.max_message_bytes:
            await _reject(
                conn, "message_too_large", f"messages are limited to {ctx.max_message_bytes} bytes"
            )
            return
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: arrays or objects nested deeply
            raw = None
        re = raw.get("id") if isinstance(raw, dict) else None
        re = re if isinstance(re, str | int) and not isinstance(re, bool) else None
        kind = raw.get("type") if isinstance(raw, dict) else None
        if not buckets.of(kind).take(1, ctx.clock.now()):
            await _reject(conn, "rate_limited", "too many messages: slow down", re)
            return
        if raw is None:
            await _reject(conn, "malformed_json", "the message is not valid JSON")
            return
        try:
            msg = m.client_message_adapter.validate_python(raw)
        except ValidationError as exc:
            if not isinstance(kind, str) or kind not in m.CLIENT_TYPES:
                await _reject(conn, "unknown_type", f"unknown message type {kind!r}", re)
            else:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"][1:]) or kind
                await _reject(conn, "invalid_message", f"{where}: {first['msg']}", re)
            return
        if isinstance(msg, m.Hello):
            await _reject(conn, "already_authenticated", "hello is only the first message", re)
            return
        if isinstance(msg, m.Ping):
            await conn.send(m.Pong(re=msg.id))
            await ctx.bus.set_online(device.id, ctx.hub.node_id, ttl=ctx.hub.presence_ttl)
            return
        if isinstance(msg, m.Ack):
            await ctx.bus.mailbox_ack(device.id, min(msg.seq, conn.last_sent))
            return
        if not ctx.admission.enter():
            ctx.metrics.overloaded.labels("ws", "limit").inc()
            await _reject(conn, OVERLOADED, OVERLOADED_MESSAGE, msg.id)
            return
        try:
            # Each call.<verb> request is handled by CallService.<verb> (LinkService.<verb>
            # for those about call links).
            service = ctx.links if isinstance(msg, m.LINK_REQUESTS) else ctx.calls
            handler = getattr(service, msg.type.removeprefix("call."))
            outcome = await handler(user, device, msg)
        except SignalingError as exc:
            await _reject(conn, exc.code, exc.message, msg.id)
            return
        except ctx.store.busy_errors:
            ctx.metrics.overloaded.labels("ws", "database_pool").inc()
            await _reject(conn, OVERLOADED, OVERLOADED_MESSAGE, msg.id)
            return
        except Exception:
            log.exception("handler for %s failed", msg.type)
            await _reject(conn, "internal_error", "the server failed; try again", msg.id)
            return
        finally:
            ctx.admission.leave()
        await conn.send(m.Result(re=msg.id, call_id=outcome if isinstance(outcome, str) else None))

    # The browser client at / (last: every route above wins over a file name).
    app.mount("/", web_client(Path(ctx.web_dir) if ctx.web_dir else WEB_DIR), name="web")
    return app
