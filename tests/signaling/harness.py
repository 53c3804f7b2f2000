"""A real signaling server on loopback and real WebSocket devices talking to it."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from visavis.bus.base import Bus
from visavis.clock import Clock, ManualClock
from visavis.config import Settings
from visavis.signaling.server import SignalingServer
from visavis.store.base import Store

EVENT_TIMEOUT = 5.0


class Device:
    """One signed-in device with its WebSocket: send requests, await events."""

    def __init__(self, base_url: str, token: str, device_id: str, handle: str) -> None:
        self.base_url = base_url
        self.token = token
        self.device_id = device_id
        self.handle = handle
        self.ws: ClientConnection | None = None
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.answers: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self.welcome: dict[str, Any] = {}
        self.last_seq = 0
        self.close_code: int | None = None
        self._ids = itertools.count(1)
        self._reader: asyncio.Task[None] | None = None

    async def connect(self, *, resume: bool = False) -> dict[str, Any]:
        ws_url = self.base_url.replace("http", "ws", 1) + "/ws"
        self.ws = await websockets.connect(ws_url, max_size=2**22)
        hello: dict[str, Any] = {"type": "hello", "token": self.token}
        if resume:
            hello["resume_after"] = self.last_seq
        await self.ws.send(json.dumps(hello))
        self.welcome = json.loads(await asyncio.wait_for(self.ws.recv(), EVENT_TIMEOUT))
        if self.welcome.get("type") == "welcome":
            if not self.welcome["resumed"]:
                self.last_seq = self.welcome["head"]  # numbering goes on from the head
            self._reader = asyncio.create_task(self._read())
        return self.welcome

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if msg.get("type") in ("result", "error", "pong") and msg.get("re") in self.answers:
                    self.answers.pop(msg["re"]).set_result(msg)
                    continue
                if "seq" in msg:
                    assert msg["seq"] == self.last_seq + 1, (
                        f"gap or duplicate: got seq {msg['seq']} after {self.last_seq}"
                    )
                    self.last_seq = msg["seq"]
                await self.events.put(msg)
        except websockets.ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd else None
        finally:
            await self.events.put({"type": "_closed", "code": self.close_code})

    async def request(self, type_: str, **fields: Any) -> dict[str, Any]:
        """Send a request and return its result or error."""
        assert self.ws is not None
        rid = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.answers[rid] = future
        await self.ws.send(json.dumps({"type": type_, "id": rid, **fields}))
        return await asyncio.wait_for(future, EVENT_TIMEOUT)

    async def ok(self, type_: str, **fields: Any) -> dict[str, Any]:
        answer = await self.request(type_, **fields)
        assert answer["type"] == "result", answer
        return answer

    async def send_raw(self, data: str | bytes) -> None:
        assert self.ws is not None
        await self.ws.send(data)

    async def next_event(
        self, type_: str | None = None, within: float = EVENT_TIMEOUT
    ) -> dict[str, Any]:
        """The very next event; with ``type_``, assert it is of that type."""
        event = await asyncio.wait_for(self.events.get(), within)
        if type_ is not None:
            assert event["type"] == type_, f"expected {type_}, got {event}"
        return event

    async def expect(
        self, type_: str, within: float = EVENT_TIMEOUT, **match: Any
    ) -> dict[str, Any]:
        """Skip events until one of ``type_`` matching ``match`` arrives."""
        async def find() -> dict[str, Any]:
            while True:
                event = await self.events.get()
                if event["type"] == type_ and all(event.get(k) == v for k, v in match.items()):
                    return event
        return await asyncio.wait_for(find(), within)

    async def no_event(self, within: float = 0.3) -> None:
        """Assert nothing arrives for ``within`` seconds."""
        try:
            event = await asyncio.wait_for(self.events.get(), within)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected event {event}")

    def drain(self) -> list[dict[str, Any]]:
        out = []
        while not self.events.empty():
            out.append(self.events.get_nowait())
        return out

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        # Our own hang-up is not an event worth asserting on.
        kept = [e for e in self.drain() if e["type"] != "_closed"]
        for event in kept:
            self.events.put_nowait(event)
        self.ws = None


class Cluster:
    """One or more signaling nodes sharing a store and a bus, and an HTTP client."""

    def __init__(self, nodes: list[SignalingServer], clock: Clock) -> None:
        self.nodes = nodes
        self.clock = clock
        self.http = httpx.AsyncClient(timeout=10)
        self.devices: list[Device] = []

    @property
    def url(self) -> str:
        return self.nodes[0].url

    async def signup(self, handle: str, password: str = "correct horse battery", **kw: Any) -> None:
        r = await self.http.post(
            f"{self.url}/api/signup", json={"handle": handle, "password": password, **kw}
        )
        assert r.status_code == 201, r.text

    async def login(
        self,
        handle: str,
        name: str = "phone",
        kind: str = "phone",
        *,
        node: int = 0,
        password: str = "correct horse battery",
        connect: bool = True,
    ) -> Device:
        base = self.nodes[node].url
        r = await self.http.post(
            f"{base}/api/login",
            json={"handle": handle, "password": password, "device_name": name, "device_kind": kind},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        device = Device(base, body["token"], body["device"]["id"], handle)
        self.devices.append(device)
        if connect:
            welcome = await device.connect()
            assert welcome["type"] == "welcome", welcome
        return device

    async def user(self, handle: str, *devices: str, node: int = 0) -> list[Device]:
        await self.signup(handle)
        return [await self.login(handle, name, node=node) for name in devices or ("phone",)]

    def advance(self, seconds: float) -> None:
        assert isinstance(self.clock, ManualClock)
        self.clock.advance(seconds)

    async def get(self, device: Device, path: str) -> httpx.Response:
        return await self.http.get(
            f"{self.url}{path}", headers={"Authorization": f"Bearer {device.token}"}
        )

    async def close(self) -> None:
        for d in self.devices:
            await d.close()
        await self.http.aclose()


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    settings = Settings(data_dir=data_dir, shared_secret="test-secret", **overrides)
    settings.signaling.port = 0
    return settings


@asynccontextmanager
async def cluster(
    tmp_path: Path,
    *,
    nodes: int = 1,
    store_factory: Any = None,
    bus_factory: Any = None,
    clock: Clock | None = None,
    sfu_url: str | None = "ws://127.0.0.1:1/sfu",
    **signaling: Any,
) -> AsyncIterator[Cluster]:
    """Start ``nodes`` signaling servers sharing one store and (per node) bus factory."""
    from visavis.bus import open_bus
    from visavis.store import open_store

    clock = clock or ManualClock()
    store: Store = store_factory() if store_factory else open_store(
        f"sqlite+aiosqlite:///{tmp_path / 'visavis.sqlite3'}"
    )
    await store.open()
    buses: list[Bus] = []
    servers: list[SignalingServer] = []
    shared_bus: Bus | None = None
    try:
        for i in range(nodes):
            if bus_factory is not None:
                bus = bus_factory()
                await bus.open()
                buses.append(bus)
            else:
                if shared_bus is None:
                    shared_bus = open_bus("memory://", clock=clock.now)
                    await shared_bus.open()
                    buses.append(shared_bus)
                bus = shared_bus
            settings = make_settings(tmp_path, node_id=f"node{i}")
            settings.signaling = settings.signaling.model_copy(update=signaling)
            server = SignalingServer(
                settings,
                store=store,
                bus=bus,
                clock=clock,
                ice_urls=lambda: ["stun:127.0.0.1:3478", "turn:127.0.0.1:3478?transport=udp"],
                sfu_url=lambda: sfu_url,
            )
            await server.start()
            servers.append(server)
        c = Cluster(servers, clock)
        try:
            yield c
        finally:
            await c.close()
    finally:
        for server in servers:
            await server.close()
        for bus in buses:
            await bus.close()
        await store.close()
