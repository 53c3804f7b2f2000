"""coturn's reference client against the real ``visavis serve --role relay`` (its entry
point, its uvloop event loop): TURN over UDP, TCP and TLS, and RFC 6062 TCP allocations.

Before the stream transports were duck-typed, TCP and TLS relayed nothing here (uvloop's
``TCPTransport`` failed an ``isinstance`` assertion in ``connection_made``) while the same
tests on an in-process asyncio server passed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.relay.conftest import run_tool
from tests.relay.relay_tools import uclient_totals
from tests.relay.tls_cert import write_self_signed
from tests.served import Served, serve

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("turnutils_uclient") is None, reason="coturn not installed"),
]

RELAY_ARGS = (
    "--role", "relay", "--listening-ip", "127.0.0.1", "--realm", "visavis.test",
    "--lt-cred-mech", "--user", "user:pass", "--allowed-peer-ip", "127.0.0.1",
)  # fmt: skip


# ICE URL prefix of each way in, e.g. turns:127.0.0.1:40123?transport=tcp
SCHEMES = {"udp": ("turn:", "udp"), "tcp": ("turn:", "tcp"), "tls": ("turns:", "tcp")}


def _port(server: Served, transport: str) -> str:
    scheme, carrier = SCHEMES[transport]
    for url in server.endpoints["relay"]:
        if url.startswith(scheme) and url.endswith(f"?transport={carrier}"):
            return url.split("?")[0].rsplit(":", 1)[1]
    raise AssertionError(f"no {transport} endpoint in {server.endpoints}")


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_uclient_through_visavis_serve(
    tmp_path: Path, turn_peer: int, transport: str
) -> None:
    cert, key = write_self_signed(tmp_path)
    with serve(tmp_path / "data", *RELAY_ARGS, "--cert", str(cert), "--pkey", str(key)) as server:
        port = _port(server, transport)
        args = ["turnutils_uclient", "-u", "user", "-w", "pass", "-e", "127.0.0.1",
                "-r", str(turn_peer), "-p", port, "-m", "2", "-n", "30", "-l", "160",
                "-z", "5", "-c", "-X", "127.0.0.1"]  # fmt: skip
        if transport != "udp":
            args.append("-t")
        if transport == "tls":
            args.append("-S")
        out = await run_tool(*args)
        sent, received, lost = uclient_totals(out)
        assert sent == received == 60 and lost == 0, out[-2000:]
        assert "Traceback" not in server.log(), server.log()


async def test_uclient_tcp_allocations_through_visavis_serve(tmp_path: Path) -> None:
    """-T: RFC 6062 (Connect, ConnectionAttempt, ConnectionBind) on the shipped loop."""
    with serve(tmp_path / "data", *RELAY_ARGS) as server:
        port = _port(server, "tcp")
        out = await run_tool(
            "turnutils_uclient", "-T", "-u", "user", "-w", "pass", "-e", "127.0.0.1",
            "-p", port, "-m", "2", "-n", "30", "-l", "160", "-z", "5", "-X", "127.0.0.1",
        )  # fmt: skip
        sent, received, lost = uclient_totals(out)
        assert sent == received == 60 and lost == 0, out[-2000:]
        assert "Traceback" not in server.log(), server.log()
