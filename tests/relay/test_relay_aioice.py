"""aioice's TURN client allocates on our relay and relays datagrams both ways."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aioice.turn
import pytest

from tests.relay.conftest import REST_SECRET
from visavis.relay.credentials import turn_rest_credentials
from visavis.relay.server import RelayServer

pytestmark = pytest.mark.interop


class Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
        self.transport: Any = None
        self.lost = asyncio.Event()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait((data, addr))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("auth", ["lt", "rest"])
async def test_aioice_turn_client(relay: RelayServer, transport: str, auth: str) -> None:
    loop = asyncio.get_running_loop()
    peer_transport, peer = await loop.create_datagram_endpoint(
        Collector, local_addr=("127.0.0.1", 0)
    )
    peer_addr = peer_transport.get_extra_info("sockname")
    if auth == "lt":
        username, password = "user", "pass"
    else:
        username, password = turn_rest_credentials(REST_SECRET, "alice", now=time.time(), ttl=600)
    turn, client = await aioice.turn.create_turn_endpoint(
        Collector,
        server_addr=("127.0.0.1", relay.ports[transport]),
        username=username,
        password=password,
        transport=transport,
    )
    try:
        relayed = turn.get_extra_info("sockname")
        assert relayed[0] == "127.0.0.1"
        for i in range(20):
            turn.sendto(f"ping {i}".encode(), peer_addr)
        got = [await asyncio.wait_for(peer.received.get(), 5) for _ in range(20)]
        assert sorted(d for d, _ in got) == sorted(f"ping {i}".encode() for i in range(20))
        assert all(tuple(a[:2]) == tuple(relayed) for _, a in got)
        for i in range(20):
            peer_transport.sendto(f"pong {i}".encode(), tuple(relayed))
        back = [await asyncio.wait_for(client.received.get(), 5) for _ in range(20)]
        assert sorted(d for d, _ in back) == sorted(f"pong {i}".encode() for i in range(20))
    finally:
        turn.close()  # deletes the allocation (Refresh 0), then connection_lost
        peer_transport.close()
        await asyncio.wait_for(client.lost.wait(), 10)
    core = relay.core
    assert core is not None and not core.allocations
