"""The relay's fast path (visavis.relay.fastpath), native and pure-Python: it forwards
ChannelData both ways on bound channels with valid permissions, counts what it relays,
hands everything else to the core (which enforces permissions, expiry and max-bps), and
never drops a send that would block without counting it."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from ipaddress import ip_address
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tests.relay.conftest import make_settings
from tests.relay.relay_tools import recvfrom
from tests.relay.test_relay_server import UdpClient
from tests.waiting import until
from visavis.protocol.stun import (
    ChannelNumber,
    Data,
    Lifetime,
    MessageClass,
    Method,
    RequestedTransport,
    XorPeerAddress,
    XorRelayedAddress,
    parse_message,
)
from visavis.protocol.turn import encode_channel_data
from visavis.protocol.turn.allocation import Allocation
from visavis.relay import _fastpath_py, fastpath
from visavis.relay import server as server_mod
from visavis.relay.server import RelayServer

CHANNEL = 0x4001


def _implementations() -> list[Any]:
    try:
        from visavis.relay import _fastpath as native
    except ImportError:
        native = None
    return [
        pytest.param(
            native,
            id="native",
            marks=pytest.mark.skipif(native is None, reason="extension not built"),
        ),
        pytest.param(_fastpath_py, id="python"),
    ]


@pytest.fixture(params=_implementations())
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    mod: ModuleType = request.param
    monkeypatch.setattr(fastpath, "fp", mod)
    for name in ("Counters", "Route", "drain_client", "drain_peer", "take_io_errors"):
        monkeypatch.setattr(fastpath, name, getattr(mod, name))
    monkeypatch.setattr(fastpath, "NATIVE", bool(mod.NATIVE))
    monkeypatch.setattr(server_mod, "PEER_BATCH", server_mod.BATCH if mod.NATIVE else 1)
    yield mod
    mod.set_force_eagain(0)


class Setup:
    def __init__(self, server: RelayServer, registry: CollectorRegistry) -> None:
        self.server = server
        self.registry = registry
        self.client = UdpClient(server.ports["udp"])
        self.peer = self.udp("127.0.0.1")
        self.relayed = ("", 0)

    @staticmethod
    def udp(host: str) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((host, 0))
        s.setblocking(False)
        return s

    async def allocate_and_bind(self) -> None:
        msg = await self.client.request(Method.ALLOCATE, [RequestedTransport(17)])
        assert msg.cls == MessageClass.SUCCESS
        relayed = msg.get(XorRelayedAddress)
        assert relayed is not None
        self.relayed = ("127.0.0.1", relayed.port)
        await self.bind()

    async def bind(self) -> None:
        peer = XorPeerAddress(ip_address("127.0.0.1"), self.peer.getsockname()[1])
        msg = await self.client.request(Method.CHANNEL_BIND, [ChannelNumber(CHANNEL), peer])
        assert msg.cls == MessageClass.SUCCESS

    async def permit(self) -> None:
        peer = XorPeerAddress(ip_address("127.0.0.1"), self.peer.getsockname()[1])
        msg = await self.client.request(Method.CREATE_PERMISSION, [peer])
        assert msg.cls == MessageClass.SUCCESS

    def allocation(self) -> Allocation:
        core = self.server.core
        assert core is not None
        (alloc,) = core.allocations.values()
        return alloc

    def to_peer(self, payload: bytes) -> None:
        self.client.sock.sendto(encode_channel_data(CHANNEL, payload), self.client.server)

    async def peer_recv(self, wait: float = 1.0) -> bytes | None:
        try:
            data, src = await asyncio.wait_for(recvfrom(self.peer, 65536), wait)
        except TimeoutError:
            return None
        assert src[1] == self.relayed[1]
        return bytes(data)

    async def client_recv(self, wait: float = 1.0) -> bytes | None:
        loop = asyncio.get_running_loop()
        try:
            return bytes(await asyncio.wait_for(loop.sock_recv(self.client.sock, 65536), wait))
        except TimeoutError:
            return None

    def dropped(self) -> float:
        """Every packet the relay has dropped so far, whatever the reason."""
        total = 0.0
        for family in self.registry.collect():
            if family.name == "visavis_relay_dropped":
                total += sum(sample.value for sample in family.samples)
        return total

    async def dropped_one_more(self, before: float) -> None:
        """Wait until the relay has counted another drop: the packet was handled, and
        not forwarded (forwarding and dropping happen in the same synchronous step), so
        a "nothing arrives" check after this cannot pass merely because it was early."""
        await until(lambda: self.dropped() > before, "the relay counts the drop")

    @staticmethod
    def nothing_queued(sock: socket.socket) -> bool:
        try:
            sock.recv(65536)
        except BlockingIOError:
            return True
        return False

    def metric(self, name: str, label: str) -> float:
        key, val = label.split("=")
        value = self.registry.get_sample_value(name, {key: val})
        return 0.0 if value is None else value

    def close(self) -> None:
        self.client.close()
        self.peer.close()


@pytest.fixture
def relay_options() -> dict[str, Any]:
    return {}


@pytest.fixture
async def setup(
    tmp_path: Path, impl: ModuleType, relay_options: dict[str, Any]
) -> AsyncIterator[Setup]:
    registry = CollectorRegistry()
    options = {"allow-loopback-peers": True, **relay_options}
    settings = make_settings(tmp_path, **options)
    server = RelayServer.from_settings(settings, metrics_registry=registry)
    await server.start()
    s = Setup(server, registry)
    try:
        yield s
    finally:
        s.close()
        await server.close()


def _spy_core(server: RelayServer) -> dict[str, int]:
    """Count the core's data-path calls (the fast path should make none)."""
    core = server.core
    assert core is not None
    calls = {"channel": 0, "peer": 0}
    channel, peer = core.handle_channel_data, server.handle_peer_data

    def on_channel(*args: Any) -> Any:
        calls["channel"] += 1
        return channel(*args)

    def on_peer(*args: Any) -> Any:
        calls["peer"] += 1
        return peer(*args)

    core.handle_channel_data = on_channel  # type: ignore[method-assign]
    server.handle_peer_data = on_peer
    return calls


async def test_fast_path_relays_both_ways_and_counts(setup: Setup) -> None:
    await setup.allocate_and_bind()
    assert len(setup.server.fast_table) == 2  # one route each way
    calls = _spy_core(setup.server)
    for i in range(20):
        setup.to_peer(b"out%03d" % i)
        assert await setup.peer_recv() == b"out%03d" % i
        setup.peer.sendto(b"back%02d" % i, setup.relayed)
        assert await setup.client_recv() == encode_channel_data(CHANNEL, b"back%02d" % i)
    assert calls == {"channel": 0, "peer": 0}  # all on the fast path
    name = "visavis_relay_packets_relayed_total"
    assert setup.metric(name, "direction=to_peer") == 20
    assert setup.metric(name, "direction=to_client") == 20
    octets = "visavis_relay_bytes_relayed_total"
    assert setup.metric(octets, "direction=to_peer") == 20 * 6
    assert setup.metric(octets, "direction=to_client") == 20 * 6
    # A truncated ChannelData (length beyond the datagram) goes to the core, which drops it:
    # the next datagram from the same client is the first to reach the peer.
    setup.client.sock.sendto(b"\x40\x01\x00\x10abc", setup.client.server)
    setup.to_peer(b"after the truncated one")
    assert await setup.peer_recv() == b"after the truncated one"
    # The core handled it in the same wake-up, before this test ran again.
    assert calls["channel"] == 1 and setup.nothing_queued(setup.peer)


async def test_peer_without_permission_is_dropped(setup: Setup) -> None:
    await setup.allocate_and_bind()
    calls = _spy_core(setup.server)
    stranger = Setup.udp("127.0.0.2")  # no permission for this IP
    try:
        stranger.sendto(b"let me in", setup.relayed)
        # Queued on the relay socket before the permitted peer's datagram, so handled first.
        setup.peer.sendto(b"permitted", setup.relayed)
        assert await setup.client_recv() == encode_channel_data(CHANNEL, b"permitted")
        assert calls["peer"] == 1  # the core saw it (in the same wake-up) and dropped it
        assert setup.nothing_queued(setup.client.sock)
        text = generate_latest(setup.registry).decode()
        assert 'visavis_relay_dropped_total{reason="relay"} 1.0' in text
    finally:
        stranger.close()
    # Same IP as the permitted peer, another port: permitted, no channel -> Data indication.
    other = Setup.udp("127.0.0.1")
    try:
        other.sendto(b"data-ind", setup.relayed)
        raw = await setup.client_recv()
        assert raw is not None
        msg = parse_message(raw)
        assert msg.method == Method.DATA and msg.cls == MessageClass.INDICATION
        data = msg.get(Data)
        assert data is not None and data.data == b"data-ind"
    finally:
        other.close()
    # ChannelData on a channel that was never bound: dropped by the core.
    setup.client.sock.sendto(encode_channel_data(0x4002, b"x"), setup.client.server)
    setup.to_peer(b"bound channel")
    assert await setup.peer_recv() == b"bound channel"
    assert setup.nothing_queued(setup.peer)


@pytest.mark.parametrize("relay_options", [{"permission-lifetime": 1}])
async def test_permission_expiry_invalidates_fast_path(setup: Setup) -> None:
    await setup.allocate_and_bind()
    setup.to_peer(b"before")
    assert await setup.peer_recv() == b"before"
    expiry = max(setup.allocation().permissions.values())
    # The route expires with the permission: wait until the relay's clock is past it.
    await until(lambda: time.time() > expiry, "the permission's expiry", within=10)
    before = setup.dropped()
    setup.to_peer(b"after")
    await setup.dropped_one_more(before)
    assert setup.nothing_queued(setup.peer)
    before = setup.dropped()
    setup.peer.sendto(b"late", setup.relayed)
    await setup.dropped_one_more(before)
    assert setup.nothing_queued(setup.client.sock)
    # A new permission rebuilds the route through the core's observer hook.
    await setup.permit()
    setup.to_peer(b"again")
    assert await setup.peer_recv() == b"again"
    setup.peer.sendto(b"back", setup.relayed)
    assert await setup.client_recv() == encode_channel_data(CHANNEL, b"back")


@pytest.mark.parametrize("relay_options", [{"channel-lifetime": 1}])
async def test_channel_expiry_invalidates_fast_path(setup: Setup) -> None:
    await setup.allocate_and_bind()
    expiry = max(ch.expiry for ch in setup.allocation().channels.values())
    await until(lambda: time.time() > expiry, "the channel's expiry", within=10)
    await setup.permit()  # the permission lives on (and is refreshed); the channel does not
    before = setup.dropped()
    setup.to_peer(b"on a dead channel")
    await setup.dropped_one_more(before)
    assert setup.nothing_queued(setup.peer)
    setup.peer.sendto(b"hello", setup.relayed)
    raw = await setup.client_recv()
    assert raw is not None  # a Data indication now, not ChannelData
    msg = parse_message(raw)
    assert msg.method == Method.DATA
    await setup.bind()  # rebinding restores the fast path
    assert len(setup.server.fast_table) == 2
    setup.to_peer(b"rebound")
    assert await setup.peer_recv() == b"rebound"


async def test_deleted_allocation_removes_routes_and_keeps_counts(setup: Setup) -> None:
    await setup.allocate_and_bind()
    for i in range(5):
        setup.to_peer(b"%d" % i)
        assert await setup.peer_recv() is not None
    msg = await setup.client.request(Method.REFRESH, [Lifetime(0)])
    assert msg.cls == MessageClass.SUCCESS
    assert len(setup.server.fast_table) == 0
    assert not setup.server._udp[0].routes
    name = "visavis_relay_packets_relayed_total"
    assert setup.metric(name, "direction=to_peer") == 5
    before = setup.dropped()
    setup.to_peer(b"gone")
    await setup.dropped_one_more(before)
    assert setup.nothing_queued(setup.peer)


@pytest.mark.parametrize("relay_options", [{"max-bps": 2000}])
async def test_bandwidth_cap_still_enforced(setup: Setup) -> None:
    await setup.allocate_and_bind()
    assert len(setup.server.fast_table) == 0  # capped allocations stay on the core's path
    for _ in range(10):
        setup.to_peer(b"x" * 1000)
    name = "visavis_relay_packets_relayed_total"

    def handled() -> float:
        return setup.metric(name, "direction=to_peer") + setup.dropped()

    await until(lambda: handled() >= 10, "the relay forwards or drops all ten")
    got = 0
    while not setup.nothing_queued(setup.peer):
        got += 1
    assert got == setup.metric(name, "direction=to_peer")
    assert 1 <= got <= 3
    text = generate_latest(setup.registry).decode()
    assert 'visavis_relay_dropped_total{reason="relay"}' in text


async def test_would_block_sends_are_queued_not_lost(setup: Setup, impl: ModuleType) -> None:
    await setup.allocate_and_bind()
    impl.set_force_eagain(6)  # the next six fast-path sends "would block"
    for i in range(3):
        setup.to_peer(b"q%d" % i)
    got = sorted([await setup.peer_recv() for _ in range(3)], key=str)
    assert got == [b"q0", b"q1", b"q2"]
    for i in range(3):
        setup.peer.sendto(b"r%d" % i, setup.relayed)
    back = sorted([await setup.client_recv() for _ in range(3)], key=str)
    assert back == [encode_channel_data(CHANNEL, b"r%d" % i) for i in range(3)]
    assert not setup.server._send_queues  # drained; the writers are gone
    name = "visavis_relay_packets_relayed_total"
    assert setup.metric(name, "direction=to_peer") == 3
    assert setup.metric(name, "direction=to_client") == 3


async def test_send_queue_overflow_is_counted(
    setup: Setup, impl: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    await setup.allocate_and_bind()
    monkeypatch.setattr(server_mod, "MAX_SEND_QUEUE", 2)
    impl.set_force_eagain(5)
    for i in range(5):  # all five wait in the listener's buffer: one drain, one batch
        setup.to_peer(b"o%d" % i)
    await until(lambda: setup.dropped() >= 3, "three sends overflow the queue")
    assert [await setup.peer_recv() for _ in range(2)] == [b"o0", b"o1"]
    text = generate_latest(setup.registry).decode()
    assert 'visavis_relay_dropped_total{reason="send-queue-full"} 3.0' in text
    assert setup.dropped() == 3  # so nothing else is on its way


async def test_slow_path_send_queue(setup: Setup) -> None:
    """A core-path send (STUN answer) that would block is queued and flushed too."""
    server = setup.server
    sock = server._udp[0].sock
    server._enqueue(sock, b"first", setup.client.sock.getsockname())
    server.send(sock, b"second", setup.client.sock.getsockname())  # behind the queue
    assert await setup.client_recv() == b"first"
    assert await setup.client_recv() == b"second"
    assert not server._send_queues
