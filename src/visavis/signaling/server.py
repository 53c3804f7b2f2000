"""The signaling service as a startable object: uvicorn serving the app on a given port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator

import uvicorn
from prometheus_client import CollectorRegistry

from visavis.bus import open_bus
from visavis.bus.base import Bus
from visavis.clock import Clock, SystemClock
from visavis.config import Settings
from visavis.fleet.metrics import FleetMetrics
from visavis.fleet.service import Assignment, Fleet, LocalFleet, RegistryFleet
from visavis.signaling import messages as m
from visavis.signaling.app import SignalingContext, create_app
from visavis.signaling.auth import PasswordWorkers
from visavis.signaling.calls import CallService
from visavis.signaling.directory import Directory
from visavis.signaling.hub import Hub
from visavis.signaling.metrics import SignalingMetrics
from visavis.signaling.push import WebPusher, load_or_create_vapid_key, vapid_public_key_b64
from visavis.signaling.ratelimit import ConcurrencyLimit, SignInThrottle
from visavis.store import open_store
from visavis.store.base import Call, Store, User
from visavis.tokens import sign_token

log = logging.getLogger(__name__)

# The SFU checks a token when a device joins; a device still in the call gets a fresh one
# from POST /api/calls/{id}/room, so a leaked or left-behind token is soon worthless.
ROOM_TOKEN_TTL = 120.0


def _bind_tcp(host: str, port: int) -> socket.socket:
    """Bind the HTTP socket here rather than in uvicorn, which exits the process when it
    cannot bind: this OSError names the address and the errno, and
    :mod:`visavis.listen_errors` turns it into the setting to change."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno, f"error while attempting to bind on address {(host, port)!r}: {exc.strerror}"
        ) from exc
    return sock


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: the process owner decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class SignalingServer:
    """Accounts, devices, calls over HTTP and WebSocket.

    Give it a store, bus and clock to share them (tests, benchmarks); by default it
    opens the ones the settings name.
    """

    name = "signaling"

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        bus: Bus | None = None,
        clock: Clock | None = None,
        ice_urls: Callable[[], list[str]] | None = None,
        sfu_url: Callable[[], str | None] | None = None,
        fleet: Fleet | None = None,
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.store = store or open_store(
            settings.effective_database_url,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            pool_timeout=settings.database_pool_timeout,
        )
        self.bus = bus or open_bus(settings.bus_url, prefix=settings.redis_prefix)
        self._owns = (store is None, bus is None)
        self._ice_urls = ice_urls or (lambda: list(settings.signaling.turn_urls))
        self.metrics = SignalingMetrics(metrics_registry)
        self._sfu_url = sfu_url
        self.fleet = fleet  # chosen in start(), once the bus is open, unless given
        self._server: uvicorn.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port = 0
        self.ctx: SignalingContext | None = None

    @property
    def url(self) -> str:
        cfg = self.settings.signaling
        return cfg.public_url or f"http://{cfg.host}:{self.port}"

    def endpoints(self) -> list[str]:
        return [self.url, self.url.replace("http", "ws", 1) + "/ws"]

    def _default_fleet(self, sfu_url: Callable[[], str | None] | None) -> Fleet:
        """A given SFU URL (one SFU), else the Redis registry when the bus is Redis, else
        ``sfu.public_url``."""
        from visavis.bus.redis import RedisBus  # only deployments with Redis load it
        from visavis.fleet.registry import RedisRegistry

        if sfu_url is not None:
            return LocalFleet(sfu_url)
        if isinstance(self.bus, RedisBus):
            return RegistryFleet(
                RedisRegistry(
                    self.bus.client, self.bus.prefix, self.settings.ensure_shared_secret()
                ),
                self.settings.fleet,
                metrics=FleetMetrics(self.metrics.registry),
                owner=self.settings.node_id,
            )
        return LocalFleet(lambda: self.settings.sfu.public_url)

    def _current_ice_urls(self) -> list[str]:
        """``signaling.turn_urls`` when set (the operator's word); else healthy relays of
        this node's region from the fleet registry, else this process's relay's URLs."""
        if self.settings.signaling.turn_urls:
            return list(self.settings.signaling.turn_urls)
        registered = self.fleet.ice_urls() if self.fleet is not None else None
        return registered or self._ice_urls()

    def _room_join(
        self, call: Call, user: User, device_id: str, assignment: Assignment
    ) -> m.CallRoom:
        room_id = assignment.room_id
        claims = {"room": room_id, "call": call.id, "user": user.handle, "device": device_id}
        if assignment.node_id is not None:
            claims["node"] = assignment.node_id  # the SFU refuses it on any other node
        if assignment.peers:
            claims["peers"] = list(assignment.peers)  # type: ignore[assignment]
        token = sign_token(
            self.settings.ensure_shared_secret(), claims, now=self.clock.now(), ttl=ROOM_TOKEN_TTL
        )
        return m.CallRoom(call_id=call.id, room_id=room_id, url=assignment.url, token=token)

    async def start(self) -> None:
        cfg = self.settings.signaling
        if self._owns[0]:
            await self.store.open()
        if self._owns[1]:
            await self.bus.open()
        if self.fleet is None:
            self.fleet = self._default_fleet(self._sfu_url)
        hub = Hub(
            bus=self.bus,
            clock=self.clock,
            node_id=self.settings.node_id,
            grace=cfg.reconnect_grace,
            presence_ttl=cfg.heartbeat_interval * 3,
            metrics=self.metrics,
        )
        directory = Directory(self.store, self.bus)
        await directory.start()
        vapid = load_or_create_vapid_key(self.settings.data_dir / "vapid-key.pem")
        self.pusher = WebPusher(vapid, cfg.vapid_subject, self.metrics)
        calls = CallService(
            store=self.store,
            directory=directory,
            hub=hub,
            clock=self.clock,
            metrics=self.metrics,
            ring_timeout=cfg.ring_timeout,
            max_participants=cfg.max_participants,
            room_join=self._room_join,
            push_ring=self.pusher.ring,
            fleet=self.fleet,
        )
        self.ctx = SignalingContext(
            store=self.store,
            bus=self.bus,
            directory=directory,
            hub=hub,
            calls=calls,
            clock=self.clock,
            metrics=self.metrics,
            secret=self.settings.ensure_shared_secret(),
            ice_urls=self._current_ice_urls,
            turn_ttl=cfg.turn_credential_ttl,
            max_message_bytes=cfg.max_message_bytes,
            rate_per_second=cfg.rate_limit_per_second,
            rate_burst=cfg.rate_limit_burst,
            max_participants=cfg.max_participants,
            vapid_public_key=vapid_public_key_b64(vapid),
            passwords=PasswordWorkers(cfg.password_workers, cfg.password_queue),
            throttle=SignInThrottle(
                failures_per_address=cfg.login_failures_per_address,
                failures_per_handle=cfg.login_failures_per_handle,
                signups_per_address=cfg.signups_per_address,
            ),
            admission=ConcurrencyLimit(cfg.max_concurrent_requests),
        )
        app = create_app(self.ctx)
        config = uvicorn.Config(
            app,
            host=cfg.host,
            port=cfg.port,
            log_level="warning",
            access_log=False,
            ws_max_size=4 * cfg.max_message_bytes,
            ws_ping_interval=cfg.heartbeat_interval,
            ws_ping_timeout=cfg.heartbeat_interval * 2,
            lifespan="off",
            ws="websockets-sansio",
            ws_per_message_deflate=False,  # zlib state costs ~50 KiB per idle device
        )
        self._server = _QuietServer(config)
        listener = _bind_tcp(cfg.host, cfg.port)
        serve = asyncio.create_task(self._server.serve([listener]), name="signaling-http")
        while not self._server.started:
            if serve.done():
                serve.result()
                raise RuntimeError("signaling server failed to start")
            await asyncio.sleep(0.01)
        self._tasks.append(serve)
        sockets = self._server.servers[0].sockets
        self.port = sockets[0].getsockname()[1]
        calls.start()
        await calls.start_fleet()
        self._tasks.append(asyncio.create_task(self._heartbeat(hub), name="presence"))

    async def _heartbeat(self, hub: Hub) -> None:
        while True:
            await asyncio.sleep(self.settings.signaling.heartbeat_interval)
            with contextlib.suppress(Exception):
                await hub.heartbeat()

    async def close(self) -> None:
        if self.ctx is not None:
            await self.ctx.calls.close()
            await self.ctx.directory.close()
            await self.ctx.hub.close_all()
        if self._server is not None:
            self._server.should_exit = True
        for task in reversed(self._tasks):
            if task.get_name() != "signaling-http":
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.ctx is not None:
            self.ctx.passwords.close()
        if self._owns[1]:
            await self.bus.close()
        if self._owns[0]:
            await self.store.close()
