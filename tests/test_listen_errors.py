"""`visavis serve` that cannot listen says which part, which address and which setting to
change (TOML key, environment variable, flag), on the real command."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.served import FREE_PORTS, visavis_command


@contextmanager
def held_port() -> Iterator[int]:
    """A port held on 127.0.0.1 for both UDP and TCP while the block runs."""
    for _ in range(20):
        tcp = socket.socket()
        tcp.bind(("127.0.0.1", 0))
        port = tcp.getsockname()[1]
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind(("127.0.0.1", port))
        except OSError:
            tcp.close()
            udp.close()
            continue
        tcp.listen()
        try:
            yield port
        finally:
            tcp.close()
            udp.close()
        return
    raise AssertionError("no port free for both UDP and TCP in 20 tries")


def serve_fails(tmp_path: Path, role: str, **settings: str) -> str:
    env = {**os.environ, **FREE_PORTS, "VISAVIS_DATA_DIR": str(tmp_path), **settings}
    done = subprocess.run(
        [*visavis_command(), "serve", "--role", role],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    return " ".join(done.stderr.split())  # the message may be wrapped


@pytest.mark.parametrize(
    ("variable", "part", "setting"),
    [
        ("VISAVIS_SFU__MEDIA_PORT", "SFU", "sfu.media_port (VISAVIS_SFU__MEDIA_PORT)"),
        ("VISAVIS_SFU__TCP_PORT", "SFU", "sfu.tcp_port (VISAVIS_SFU__TCP_PORT)"),
        (
            "VISAVIS_RELAY__LISTENING_PORT",
            "relay",
            "relay.listening_port (VISAVIS_RELAY__LISTENING_PORT, --listening-port)",
        ),
        (
            "VISAVIS_SIGNALING__PORT",
            "signaling server",
            "signaling.port (VISAVIS_SIGNALING__PORT, --port)",
        ),
    ],
)
def test_a_port_clash_names_the_part_and_its_setting(
    tmp_path: Path, variable: str, part: str, setting: str
) -> None:
    with held_port() as port:
        role = "signaling" if part == "signaling server" else part.lower()
        err = serve_fails(tmp_path, role, **{variable: str(port)})
    assert f"the {part} cannot listen on 127.0.0.1:{port} (address already in use)" in err, err
    assert f"change {setting}" in err, err
    assert "--port" not in err or variable == "VISAVIS_SIGNALING__PORT", err


def test_an_address_not_of_this_machine_names_the_host_setting(tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface here: binding it fails without a packet.
    err = serve_fails(tmp_path, "sfu", VISAVIS_SFU__MEDIA_HOST="192.0.2.1")
    assert "the SFU cannot listen on 192.0.2.1:0 (cannot assign requested address)" in err, err
    assert "change sfu.media_host (VISAVIS_SFU__MEDIA_HOST)" in err, err
