"""Interoperability with coturn's reference clients (the coturn server is never started)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.relay.conftest import REST_SECRET, run_tool
from tests.relay.relay_tools import uclient_totals
from visavis.relay.server import RelayServer

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("turnutils_uclient") is None, reason="coturn not installed"),
]


async def test_stunclient_gets_mapped_address(relay: RelayServer) -> None:
    out = await run_tool("turnutils_stunclient", "-p", str(relay.ports["udp"]), "127.0.0.1")
    assert "UDP reflexive addr: 127.0.0.1:" in out, out


@pytest.mark.parametrize(
    "transport,auth,channels",
    [
        ("udp", "lt", True),
        ("udp", "lt", False),
        ("udp", "rest", True),
        ("tcp", "lt", True),
        ("tcp", "rest", False),
    ],
)
async def test_uclient_relays_without_loss(
    relay: RelayServer, turn_peer: int, transport: str, auth: str, channels: bool
) -> None:
    messages, clients = 40, 3
    args = ["turnutils_uclient", "-u", "user"]
    args += ["-w", "pass"] if auth == "lt" else ["-W", REST_SECRET]
    args += ["-e", "127.0.0.1", "-r", str(turn_peer), "-p", str(relay.ports[transport])]
    args += ["-m", str(clients), "-n", str(messages), "-l", "160", "-z", "5", "-X", "127.0.0.1"]
    if channels:
        args.append("-c")
    if transport == "tcp":
        args.append("-t")
    out = await run_tool(*args)
    sent, received, lost = uclient_totals(out)
    # Without channels uclient allocates RTP/RTCP pairs (EVEN-PORT): more sessions than -m.
    assert sent == received and sent >= messages * clients, out[-2000:]
    assert lost == 0, out[-2000:]
    assert relay.core is not None
    p_out, _, p_in, _ = relay.core.totals()
    assert p_out >= messages * clients and p_in >= messages * clients


async def test_uclient_over_tls(tmp_path: Path, turn_peer: int) -> None:
    from tests.relay.conftest import make_settings
    from tests.relay.tls_cert import write_self_signed

    cert, key = write_self_signed(tmp_path)
    server = RelayServer.from_settings(make_settings(tmp_path, cert=str(cert), pkey=str(key)))
    await server.start()
    try:
        assert any(e.startswith("turns:") for e in server.endpoints())
        out = await run_tool(
            "turnutils_uclient", "-u", "user", "-w", "pass", "-e", "127.0.0.1",
            "-r", str(turn_peer), "-p", str(server.ports["tls"]), "-m", "2", "-n", "30",
            "-l", "160", "-z", "5", "-c", "-t", "-S", "-X", "127.0.0.1",
        )  # fmt: skip
        sent, received, lost = uclient_totals(out)
        assert sent == received == 60 and lost == 0, out[-2000:]
    finally:
        await server.close()


async def test_uclient_wrong_password_is_refused(relay: RelayServer, turn_peer: int) -> None:
    out = await run_tool(
        "turnutils_uclient", "-u", "user", "-w", "wrong", "-e", "127.0.0.1",
        "-r", str(turn_peer), "-p", str(relay.ports["udp"]), "-m", "1", "-n", "5",
        "-l", "160", "-c", "-X", "127.0.0.1",
        limit=30,
    )  # fmt: skip
    _, received, _ = uclient_totals(out)
    assert received <= 0, out[-2000:]
    assert relay.core is not None and relay.core.stats.auth_failures["bad-integrity"] >= 1


async def test_uclient_tcp_allocations_rfc6062(relay: RelayServer) -> None:
    """-T: two uclient endpoints with TCP relays (Connect, ConnectionAttempt,
    ConnectionBind); every message crosses both relays with no loss."""
    out = await run_tool(
        "turnutils_uclient", "-T", "-u", "user", "-w", "pass", "-e", "127.0.0.1",
        "-p", str(relay.ports["tcp"]), "-m", "2", "-n", "30", "-l", "160", "-z", "5",
        "-X", "127.0.0.1",
    )  # fmt: skip
    sent, received, lost = uclient_totals(out)
    assert sent == received == 60 and lost == 0, out[-2000:]
    assert relay.core is not None
    assert relay.core.stats.requests["CONNECT"] >= 1
    assert relay.core.stats.requests["CONNECTION_BIND"] >= 2


async def test_uclient_passive_tcp_peer_rfc6062(relay: RelayServer) -> None:
    """-P: a peer connects to the TCP relay (ConnectionAttempt) and data arrives. uclient
    counts its messages twice and receipts once in this mode: coturn 4.6.1 itself reports
    exactly 50 % "lost" for the same command, so we assert the same figures, not zero."""
    out = await run_tool(
        "turnutils_uclient", "-P", "-u", "user", "-w", "pass", "-e", "127.0.0.1",
        "-p", str(relay.ports["tcp"]), "-m", "1", "-n", "5", "-l", "160", "-z", "5",
        "-X", "127.0.0.1",
    )  # fmt: skip
    sent, received, lost = uclient_totals(out)
    assert (sent, received, lost) == (10, 5, 5), out[-2000:]
    assert relay.core is not None and relay.core.stats.requests["CONNECTION_BIND"] >= 1
