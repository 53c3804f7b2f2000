"""The relay service over real loopback sockets: configuration, metrics, robustness,
peer policy, TCP framing, lifecycle."""

from __future__ import annotations

import asyncio
import socket
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry, generate_latest

from tests.relay.conftest import make_settings
from tests.relay.relay_tools import recvfrom
from tests.waiting import until
from visavis.config import Settings
from visavis.protocol.stun import (
    ChannelNumber,
    ErrorCodeAttr,
    Message,
    MessageClass,
    Method,
    Nonce,
    Realm,
    RequestedTransport,
    Username,
    XorPeerAddress,
    XorRelayedAddress,
    encode_message,
    long_term_key,
    parse_message,
)
from visavis.protocol.turn import StreamFramer, encode_channel_data
from visavis.relay.cli_options import relay_options, relay_overrides
from visavis.relay.server import RelayServer
from visavis.relay.settings import RelaySettings

REALM = "visavis.test"


class UdpClient:
    """A minimal blocking TURN client over UDP for these tests."""

    def __init__(self, port: int, username: str = "user", password: str = "pass") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.server = ("127.0.0.1", port)
        self.key = long_term_key(username, REALM, password)
        self.username = username
        self.nonce = ""
        self.n = 0

    def close(self) -> None:
        self.sock.close()

    async def recv(self) -> bytes:
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.sock_recv(self.sock, 65536), 2.0)

    async def request(self, method: int, attrs: list[Any], auth: bool = True) -> Message:
        for _ in range(2):
            self.n += 1
            tid = self.n.to_bytes(12, "big")
            if auth and self.nonce:
                full = [*attrs, Username(self.username), Realm(REALM), Nonce(self.nonce)]
                data = encode_message(method, MessageClass.REQUEST, tid, full, key=self.key)
            else:
                data = encode_message(method, MessageClass.REQUEST, tid, attrs)
            self.sock.sendto(data, self.server)
            msg = parse_message(await self.recv())
            err = msg.get(ErrorCodeAttr)
            nonce = msg.get(Nonce)
            challenged = err is not None and err.code in (401, 438)
            if auth and challenged and nonce is not None and self.nonce != nonce.value:
                self.nonce = nonce.value
                continue
            return msg
        return msg


def code(msg: Message) -> int | None:
    err = msg.get(ErrorCodeAttr)
    return None if err is None else err.code


def test_settings_accept_coturn_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "visavis.toml"
    toml.write_text(
        "[relay]\n"
        'listening-ip = ["0.0.0.0"]\n'
        "listening-port = 3479\n"
        'external-ip = "203.0.113.5/10.0.0.5"\n'
        "min-port = 50000\nmax-port = 50100\n"
        'realm = "example.org"\n'
        'user = ["alice:secret", "bob:0x0123456789abcdef0123456789abcdef"]\n'
        'static-auth-secret = "s3"\n'
        'denied-peer-ip = ["198.51.100.0-198.51.100.255"]\n'
        "user-quota = 3\ntotal-quota = 100\nmax-bps = 64000\nno-tls = true\n"
    )
    monkeypatch.setenv("VISAVIS_CONFIG", str(toml))
    relay = Settings(data_dir=tmp_path).relay
    assert relay.listening_ip == ["0.0.0.0"]
    assert relay.listening_port == 3479
    assert relay.external_ip == ["203.0.113.5/10.0.0.5"]
    assert (relay.min_port, relay.max_port, relay.realm) == (50000, 50100, "example.org")
    assert relay.user[1].startswith("bob:0x")
    assert relay.static_auth_secret is not None
    assert relay.static_auth_secret.get_secret_value() == "s3"
    assert (relay.user_quota, relay.total_quota, relay.max_bps, relay.no_tls) == (
        3,
        100,
        64000,
        True,
    )
    assert RelaySettings(listening_port=1).listening_port == 1  # field names work too


def test_cli_options_map_to_settings(tmp_path: Path) -> None:
    captured: dict[str, Any] = {}

    @click.command()
    @relay_options
    @click.option("--port", type=int)
    def serve(**kwargs: Any) -> None:
        captured["relay"] = relay_overrides(kwargs)
        captured["rest"] = kwargs

    result = CliRunner().invoke(
        serve,
        [
            "--listening-port", "3480", "--realm", "r", "--user", "a:b", "--user", "c:d",
            "--use-auth-secret", "--static-auth-secret", "xyz", "--denied-peer-ip", "8.8.8.8",
            "--no-tls", "--max-bps", "1000", "--port", "9",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    relay = captured["relay"]
    assert relay == {
        "listening_port": 3480,
        "realm": "r",
        "user": ["a:b", "c:d"],
        "use_auth_secret": True,
        "static_auth_secret": "xyz",
        "denied_peer_ip": ["8.8.8.8"],
        "max_bps": 1000,
        "no_tls": True,
    }
    assert captured["rest"] == {"port": 9}
    settings = Settings(data_dir=tmp_path, relay=relay)
    assert settings.relay.listening_port == 3480 and settings.relay.no_tls


async def test_endpoints_ports_and_metrics(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    server = RelayServer.from_settings(make_settings(tmp_path), metrics_registry=registry)
    await server.start()
    try:
        ports = server.ports
        assert ports["udp"] == ports["tcp"] > 0
        assert server.endpoints() == [
            f"stun:127.0.0.1:{ports['udp']}",
            f"turn:127.0.0.1:{ports['udp']}?transport=udp",
            f"turn:127.0.0.1:{ports['tcp']}?transport=tcp",
        ]
        client = UdpClient(ports["udp"], password="wrong")
        msg = await client.request(Method.ALLOCATE, [RequestedTransport(17)])
        assert code(msg) == 401
        client.close()
        text = generate_latest(registry).decode()
        assert "visavis_relay_allocations 0.0" in text
        assert 'visavis_relay_auth_failures_total{reason="bad-integrity"} 1.0' in text
    finally:
        await server.close()
    # A second server on the same registry after the first closed: no duplicate metrics.
    again = RelayServer.from_settings(make_settings(tmp_path), metrics_registry=registry)
    await again.start()
    await again.close()


async def test_relay_denies_forbidden_peers_and_survives_garbage(relay: RelayServer) -> None:
    """403 for loopback tricks (only 127.0.0.1 is allowed here), garbage never disturbs an
    established allocation."""
    client = UdpClient(relay.ports["udp"])
    msg = await client.request(Method.ALLOCATE, [RequestedTransport(17)])
    assert msg.cls == MessageClass.SUCCESS
    relayed = msg.get(XorRelayedAddress)
    assert relayed is not None
    for bad in ["127.0.0.2", "0.0.0.0", "10.1.2.3", "169.254.169.254", "100.64.0.1"]:
        answer = await client.request(
            Method.CREATE_PERMISSION, [XorPeerAddress(ip_address(bad), 9)]
        )
        err = answer.get(ErrorCodeAttr)
        assert err is not None and (err.code, err.reason) == (403, "Forbidden IP"), bad
    # An echo peer on loopback (allowed by the test settings).
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    peer_addr = peer.getsockname()
    bind = await client.request(
        Method.CHANNEL_BIND,
        [ChannelNumber(0x4000), XorPeerAddress(ip_address("127.0.0.1"), peer_addr[1])],
    )
    assert bind.cls == MessageClass.SUCCESS
    # Garbage from the same and another client: dropped or answered with 400.
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    junk = [
        b"",
        b"\x00",
        b"\x00\x01\x00\x04" + b"\x21\x12\xa4\x42" + b"x" * 12 + b"\xff" * 4,
        b"\x40\x00\xff\xff",
        b"\x80" * 100,
        b"\x00\x03\x00\x00!\x12\xa4B" + b"\x00" * 12,
    ]
    for data in junk:
        other.sendto(data, ("127.0.0.1", relay.ports["udp"]))
        client.sock.sendto(data, ("127.0.0.1", relay.ports["udp"]))
    other.close()
    # Sent after the junk on the same socket, so handled after it.
    client.sock.sendto(encode_channel_data(0x4000, b"still alive"), client.server)
    data, src = await asyncio.wait_for(recvfrom(peer, 65536), 2)
    assert data == b"still alive" and src[1] == relayed.port
    peer.sendto(b"echo", ("127.0.0.1", relayed.port))
    while (answer := await client.recv())[0] < 0x40:
        assert parse_message(answer).cls == MessageClass.ERROR  # 400s to the junk
    assert answer == b"\x40\x00\x00\x04echo"
    assert relay.core is not None and relay.core.stats.dropped["malformed"] >= 2
    peer.close()
    client.close()


async def test_tcp_channel_data_is_padded(relay: RelayServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.ports["tcp"])
    key = long_term_key("user", REALM, "pass")
    framer = StreamFramer()

    async def roundtrip(method: int, attrs: list[Any], tid: int, nonce: str = "") -> Message:
        full = [*attrs, Username("user"), Realm(REALM), Nonce(nonce)] if nonce else attrs
        data = encode_message(
            method, MessageClass.REQUEST, tid.to_bytes(12, "big"), full, key=key if nonce else None
        )
        writer.write(data)
        while True:
            frames = framer.feed(await asyncio.wait_for(reader.read(4096), 2))
            if frames:
                return parse_message(frames[0])

    challenge = await roundtrip(Method.ALLOCATE, [RequestedTransport(17)], 1)
    nonce = challenge.get(Nonce)
    assert nonce is not None
    ok = await roundtrip(Method.ALLOCATE, [RequestedTransport(17)], 2, nonce.value)
    relayed = ok.get(XorRelayedAddress)
    assert relayed is not None
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    port = peer.getsockname()[1]
    bound = await roundtrip(
        Method.CHANNEL_BIND,
        [ChannelNumber(0x4001), XorPeerAddress(ip_address("127.0.0.1"), port)],
        3,
        nonce.value,
    )
    assert bound.cls == MessageClass.SUCCESS
    # Client -> peer: two padded frames in one write.
    writer.write(
        encode_channel_data(0x4001, b"abcde", pad=True)
        + encode_channel_data(0x4001, b"fg", pad=True)
    )
    loop = asyncio.get_running_loop()
    assert await asyncio.wait_for(loop.sock_recv(peer, 100), 2) == b"abcde"
    assert await asyncio.wait_for(loop.sock_recv(peer, 100), 2) == b"fg"
    # Peer -> client: padded to 4 bytes.
    peer.sendto(b"xyz", ("127.0.0.1", relayed.port))
    data = await asyncio.wait_for(reader.readexactly(8), 2)
    assert data == b"\x40\x01\x00\x03xyz\x00"
    # Closing the connection deletes the allocation.
    writer.close()
    await writer.wait_closed()
    core = relay.core
    assert core is not None
    await until(lambda: not core.allocations, "closing the connection deletes the allocation")
    peer.close()


async def test_close_releases_everything(tmp_path: Path) -> None:
    server = RelayServer.from_settings(make_settings(tmp_path))
    await server.start()
    client = UdpClient(server.ports["udp"])
    assert (await client.request(Method.ALLOCATE, [RequestedTransport(17)])).cls == (
        MessageClass.SUCCESS
    )
    assert server.relay_sockets == 1
    await server.close()
    assert server.relay_sockets == 0
    client.close()


def test_precedence_flags_over_env_over_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "visavis.toml"
    toml.write_text('[relay]\nlistening-port = 4000\nrealm = "toml"\nmin-port = 50000\n')
    monkeypatch.setenv("VISAVIS_CONFIG", str(toml))
    monkeypatch.setenv("VISAVIS_RELAY__REALM", "env")
    relay = Settings(data_dir=tmp_path, relay={"listening_port": 5000}).relay
    assert (relay.listening_port, relay.realm, relay.min_port) == (5000, "env", 50000)


async def test_ipv6_relay_over_ipv4_control(tmp_path: Path) -> None:
    """RFC 6156: an IPv6 relay requested with REQUESTED-ADDRESS-FAMILY, data to an IPv6
    peer on ::1 and back; the IPv4-mapped spelling of an allowed address stays refused."""
    from visavis.protocol.stun import RequestedAddressFamily

    server = RelayServer.from_settings(
        make_settings(tmp_path, **{"relay-ip": ["127.0.0.1", "::1"], "allowed-peer-ip": ["::1"]})
    )
    await server.start()
    client = UdpClient(server.ports["udp"])
    peer = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        msg = await client.request(
            Method.ALLOCATE, [RequestedTransport(17), RequestedAddressFamily(0x02)]
        )
        assert msg.cls == MessageClass.SUCCESS, code(msg)
        relayed = msg.get(XorRelayedAddress)
        assert relayed is not None and str(relayed.ip) == "::1"
        peer.bind(("::1", 0))
        peer.setblocking(False)
        port = peer.getsockname()[1]
        v4 = XorPeerAddress(ip_address("127.0.0.1"), port)
        assert code(await client.request(Method.CREATE_PERMISSION, [v4])) == 443
        bind = await client.request(
            Method.CHANNEL_BIND, [ChannelNumber(0x4000), XorPeerAddress(ip_address("::1"), port)]
        )
        assert bind.cls == MessageClass.SUCCESS
        client.sock.sendto(encode_channel_data(0x4000, b"six"), client.server)
        data, src = await asyncio.wait_for(recvfrom(peer, 100), 2)
        assert data == b"six" and src[1] == relayed.port
        peer.sendto(b"back", ("::1", relayed.port))
        assert await client.recv() == b"\x40\x00\x00\x04back"
    finally:
        peer.close()
        client.close()
        await server.close()
