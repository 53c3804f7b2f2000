"""The client's UDP probe (visavis.client.ice.probe_udp) on the project's STUN codec:
our relay answers it over real loopback UDP; silence and garbage answers mean no UDP."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from tests.relay.conftest import make_settings
from visavis.client import ice
from visavis.protocol.stun import MessageClass, Method, encode_message, parse_message
from visavis.relay.server import RelayServer
from visavis.signaling.messages import IceServer


async def test_the_relay_answers_the_probe(tmp_path: Path) -> None:
    relay = RelayServer.from_settings(make_settings(tmp_path))
    await relay.start()
    try:
        servers = [IceServer(urls=[f"stun:127.0.0.1:{relay.ports['udp']}"])]
        assert await ice.probe_udp(servers) is True
    finally:
        await relay.close()
    assert await ice.probe_udp([IceServer(urls=["turn:127.0.0.1:3478"])]) is None


class _Liar(asyncio.DatagramProtocol):
    """Answers each request with garbage, then with a response to another transaction."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = parse_message(data)
        assert (request.method, request.cls) == (Method.BINDING, MessageClass.REQUEST)
        self.requests.append(data)
        assert self.transport is not None
        self.transport.sendto(b"\x01\x01\x00\x08\x21\x12\xa4\x42" + bytes(12), addr)  # cut
        other = bytes(12) if request.transaction_id != bytes(12) else b"\x01" * 12
        self.transport.sendto(encode_message(Method.BINDING, MessageClass.SUCCESS, other, []), addr)


async def test_silence_and_garbage_mean_no_udp() -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        assert await ice.probe_udp([IceServer(urls=[f"stun:127.0.0.1:{port}"])]) is False
    transport, liar = await loop.create_datagram_endpoint(_Liar, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        assert await ice.probe_udp([IceServer(urls=[f"stun:127.0.0.1:{port}"])]) is False
        assert len(liar.requests) == ice.PROBE_TRIES
    finally:
        transport.close()
