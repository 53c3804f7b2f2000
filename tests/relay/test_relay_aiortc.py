"""An aiortc call with relay-only ICE connects through our TURN server."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from tests.relay.conftest import REST_SECRET
from visavis.relay.credentials import turn_rest_credentials
from visavis.relay.server import RelayServer

pytestmark = pytest.mark.interop


async def test_relay_only_call(relay: RelayServer) -> None:
    assert relay.core is not None
    username, password = turn_rest_credentials(REST_SECRET, "alice", now=time.time(), ttl=600)
    url = f"turn:127.0.0.1:{relay.ports['udp']}?transport=udp"
    config = RTCConfiguration(
        iceServers=[RTCIceServer(urls=[url], username=username, credential=password)],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY,
    )
    caller, callee = RTCPeerConnection(config), RTCPeerConnection(config)
    received: asyncio.Queue[str] = asyncio.Queue()
    try:
        channel = caller.createDataChannel("chat")

        @callee.on("datachannel")
        def on_datachannel(ch: object) -> None:
            @ch.on("message")  # type: ignore[attr-defined]
            def on_message(message: str) -> None:
                received.put_nowait(message)

        opened = asyncio.Event()
        channel.on("open", opened.set)
        await caller.setLocalDescription(await caller.createOffer())
        offer = caller.localDescription
        assert " typ relay " in offer.sdp and " typ host " not in offer.sdp
        await callee.setRemoteDescription(offer)
        await callee.setLocalDescription(await callee.createAnswer())
        await caller.setRemoteDescription(callee.localDescription)
        await asyncio.wait_for(opened.wait(), 20)
        for i in range(10):
            channel.send(f"hello {i}")
        got = [await asyncio.wait_for(received.get(), 10) for _ in range(10)]
        assert got == [f"hello {i}" for i in range(10)]
        assert caller.iceConnectionState in ("connected", "completed")
        assert len(relay.core.allocations) >= 2
        p_out, _, p_in, _ = relay.core.totals()
        assert p_out > 10 and p_in > 10
    finally:
        await caller.close()
        await callee.close()
