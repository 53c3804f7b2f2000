"""TURN over TLS keeps its allocations while the certificate is renewed: new handshakes
present the new certificate (after SIGHUP, or once the files change), established TLS
connections keep relaying, and a broken renewal is refused."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

import pytest

from tests.relay.conftest import make_settings
from tests.relay.relay_tools import StreamClient, recvfrom
from tests.relay.tls_cert import write_self_signed
from tests.served import serve
from tests.waiting import until_sync
from visavis.protocol.stun import (
    ChannelNumber,
    MessageClass,
    Method,
    RequestedTransport,
    XorPeerAddress,
    XorRelayedAddress,
)
from visavis.protocol.turn import encode_channel_data
from visavis.relay import server as server_mod
from visavis.relay.server import RelayServer

REALM = "visavis.test"
CHANNEL = 0x4001


@dataclass
class Certs:
    a: tuple[Path, Path]
    b: tuple[Path, Path]
    live: tuple[Path, Path]  # what the relay is configured with
    trust: ssl.SSLContext  # a client trusting both

    def install(self, pair: tuple[Path, Path]) -> None:
        """Replace the live files as a renewal does (new files renamed into place)."""
        for source, target in zip(pair, self.live, strict=True):
            fresh = target.with_suffix(".new")
            shutil.copyfile(source, fresh)
            os.replace(fresh, target)

    @staticmethod
    def der(pair: tuple[Path, Path]) -> bytes:
        return ssl.PEM_cert_to_DER_cert(pair[0].read_text())


def make_certs(tmp_path: Path) -> Certs:
    a = write_self_signed(tmp_path, hostname="relay-a.test", stem="a-")  # distinct issuers
    b = write_self_signed(tmp_path, hostname="relay-b.test", stem="b-")
    live_dir = tmp_path / "live"
    live_dir.mkdir()
    live = (live_dir / "fullchain.pem", live_dir / "privkey.pem")
    trust = ssl.create_default_context()
    for pair in (a, b):
        trust.load_verify_locations(cafile=str(pair[0]))
    certs = Certs(a, b, live, trust)
    certs.install(a)
    return certs


async def presented(port: int, trust: ssl.SSLContext) -> bytes:
    """The certificate a new TLS handshake with the relay gets."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=trust)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert der is not None
        return bytes(der)
    finally:
        writer.close()


@asynccontextmanager
async def tls_allocation(port: int, trust: ssl.SSLContext) -> AsyncIterator[Relayed]:
    """A TURN allocation over one TLS connection, with a channel to a UDP peer."""
    client = await StreamClient.open(port, REALM, ssl=trust)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    try:
        answer = await client.request(Method.ALLOCATE, [RequestedTransport(17)])
        relayed = answer.get(XorRelayedAddress)
        assert relayed is not None, answer
        bound = await client.request(
            Method.CHANNEL_BIND,
            [
                ChannelNumber(CHANNEL),
                XorPeerAddress(ip_address("127.0.0.1"), peer.getsockname()[1]),
            ],
        )
        assert bound.cls == MessageClass.SUCCESS
        yield Relayed(client, peer, ("127.0.0.1", relayed.port))
    finally:
        peer.close()
        await client.close()


@dataclass
class Relayed:
    client: StreamClient
    peer: socket.socket
    relayed: tuple[str, int]

    async def both_ways(self, tag: bytes) -> None:
        self.client.writer.write(encode_channel_data(CHANNEL, b"out " + tag, pad=True))
        data, _ = await asyncio.wait_for(recvfrom(self.peer, 2048), 10)
        assert data == b"out " + tag
        self.peer.sendto(b"back " + tag, self.relayed)
        frame = await self.client.frame(10)
        assert frame[4 : 4 + len(tag) + 5] == b"back " + tag

    def certificate(self) -> bytes:
        der = self.client.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return bytes(der)


async def test_a_changed_certificate_file_is_picked_up_without_dropping_allocations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_mod, "CERT_CHECK_INTERVAL", 0.05)
    certs = make_certs(tmp_path)
    settings = make_settings(tmp_path, cert=str(certs.live[0]), pkey=str(certs.live[1]))
    relay = RelayServer.from_settings(settings)
    await relay.start()
    port = relay.ports["tls"]
    try:
        async with tls_allocation(port, certs.trust) as old:
            assert old.certificate() == certs.der(certs.a)
            await old.both_ways(b"1")
            certs.install(certs.b)
            b = certs.der(certs.b)
            deadline = asyncio.get_running_loop().time() + 20
            while await presented(port, certs.trust) != b:  # the check runs every 50 ms
                assert asyncio.get_running_loop().time() < deadline, "never reloaded"
            # The allocation made over the old certificate's connection is still there.
            await old.both_ways(b"2")
            assert old.certificate() == certs.der(certs.a)
            assert relay.core is not None and len(relay.core.allocations) == 1
            # A half-done renewal (new certificate, other key) is refused: B stays.
            shutil.copyfile(certs.a[1], certs.live[1])
            assert relay.reload_tls("test") is False
            assert await presented(port, certs.trust) == b
            await old.both_ways(b"3")
    finally:
        await relay.close()


@pytest.mark.parametrize("role", ["relay", "all"])  # all: SIGHUP reaches the relay child
async def test_sighup_reloads_the_certificate_of_visavis_serve(tmp_path: Path, role: str) -> None:
    """The real command: SIGHUP, then new handshakes get the new certificate while the
    allocation made before keeps relaying."""
    certs = make_certs(tmp_path)
    args = ["--role", role, "--cert", str(certs.live[0]), "--pkey", str(certs.live[1]),
            "--realm", REALM, "--user", "user:pass", "--allowed-peer-ip", "127.0.0.1"]  # fmt: skip
    with serve(tmp_path / "data", *args) as served:
        url = served.url("relay", "turns:")
        port = int(url.split(":")[2].split("?")[0])
        async with tls_allocation(port, certs.trust) as old:
            await old.both_ways(b"before")
            certs.install(certs.b)
            served.process.send_signal(signal.SIGHUP)
            until_sync(lambda: "(SIGHUP)" in served.log(), "the relay logs the reload")
            assert "TLS certificate reloaded" in served.log()
            assert await presented(port, certs.trust) == certs.der(certs.b)
            await old.both_ways(b"after")
            assert served.process.poll() is None
    assert served.process.returncode == 0, served.log()
