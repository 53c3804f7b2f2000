"""RFC 6062 TCP allocations own their relayed port: a second allocation, of this relay or
of another relay on the machine, never listens on it too, while the allocation's own
Connect requests still leave from it (RFC 6062 5.2)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import ip_address
from pathlib import Path

from tests.relay.conftest import REST_SECRET, make_settings
from tests.relay.relay_tools import StreamClient, error_code
from tests.waiting import until
from visavis.protocol.stun import (
    ConnectionId,
    MessageClass,
    Method,
    RequestedTransport,
    XorPeerAddress,
    XorRelayedAddress,
)
from visavis.relay.server import RelayServer

REALM = "visavis.test"
TCP = 6


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def allocate_tcp(relay: RelayServer) -> tuple[StreamClient, int | None, int | None]:
    """A TCP allocation over a new control connection: (client, relayed port, error)."""
    client = await StreamClient.open(relay.ports["tcp"], REALM)
    answer = await client.request(Method.ALLOCATE, [RequestedTransport(TCP)])
    relayed = answer.get(XorRelayedAddress)
    return client, relayed.port if relayed else None, error_code(answer)


@asynccontextmanager
async def one_port_relays(
    tmp_path: Path, count: int
) -> AsyncIterator[tuple[int, list[RelayServer], StreamClient]]:
    """``count`` relays whose relay port range is the same single port, that port, and
    the client whose TCP allocation (on the first relay) holds it. Another program may
    take the port between our probe and the allocation: then pick another (a bounded
    retry, not a wait)."""
    for _ in range(5):
        port = free_tcp_port()
        relays = [
            # The relay's own settings slice and the secret: all it needs.
            RelayServer(
                make_settings(tmp_path, **{"min-port": port, "max-port": port}).relay,
                secret=REST_SECRET,
            )
            for i in range(count)
        ]
        try:
            for relay in relays:
                await relay.start()
            holder, relayed, err = await allocate_tcp(relays[0])
            if err == 508:
                await holder.close()
                continue
            assert (relayed, err) == (port, None)
            try:
                yield port, relays, holder
            finally:
                await holder.close()
            return
        finally:
            for relay in relays:
                await relay.close()
    raise AssertionError("no free port for a one-port relay range in 5 tries")


async def test_two_tcp_allocations_never_share_a_relayed_port(tmp_path: Path) -> None:
    async with one_port_relays(tmp_path, 2) as (port, (first, second), holder):
        # The only port in the range is taken: 508, on this relay and on another one.
        for relay in (first, second):
            client, relayed, err = await allocate_tcp(relay)
            assert (relayed, err) == (None, 508), "two allocations would share a port"
            await client.close()
        # The port is free again once its allocation is gone (here: control connection
        # closed, which deletes a TCP allocation).
        await holder.close()
        assert first.core is not None
        core = first.core
        await until(lambda: not core.allocations, "the closed allocation is deleted")
        client, relayed, err = await allocate_tcp(second)
        assert (relayed, err) == (port, None)
        await client.close()


async def test_connect_leaves_from_the_relayed_port(tmp_path: Path) -> None:
    """The peer sees the connection come from the relayed address; meanwhile another
    relay still cannot take that port."""
    async with one_port_relays(tmp_path, 2) as (port, (_, other), client):
        peer = socket.socket()
        peer.bind(("127.0.0.1", 0))
        peer.listen()
        peer.setblocking(False)
        loop = asyncio.get_running_loop()
        accepting = asyncio.ensure_future(loop.sock_accept(peer))
        answer = await client.request(
            Method.CONNECT, [XorPeerAddress(ip_address("127.0.0.1"), peer.getsockname()[1])]
        )
        assert answer.cls == MessageClass.SUCCESS and answer.get(ConnectionId) is not None
        conn, source = await asyncio.wait_for(accepting, 5)
        assert source == ("127.0.0.1", port)
        intruder, relayed, err = await allocate_tcp(other)
        assert (relayed, err) == (None, 508)
        for sock in (conn, peer):
            sock.close()
        await intruder.close()
