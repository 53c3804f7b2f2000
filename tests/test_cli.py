"""The `visavis` command as an operator uses it: real processes, real ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.served import FREE_PORTS, children, serve, visavis_command

VISAVIS = [sys.executable, "-m", "visavis.cli"]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISAVIS_")}
    return {**env, "VISAVIS_DATA_DIR": str(tmp_path / "data"), **extra}


def test_help_teaches() -> None:
    out = subprocess.run([*VISAVIS, "--help"], capture_output=True, text=True, check=True).stdout
    assert "visavis serve" in out and "visavis config" in out
    serve = subprocess.run(
        [*VISAVIS, "serve", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in ("--role", "--listening-port", "--static-auth-secret", "--denied-peer-ip"):
        assert flag in serve


def test_config_prints_effective_values_with_secrets_masked(tmp_path: Path) -> None:
    config = tmp_path / "visavis.toml"
    config.write_text('shared_secret = "hunter2-very-secret"\n[signaling]\nring_timeout = 45\n')
    out = subprocess.run(
        [*VISAVIS, "config", "--config", str(config)],
        capture_output=True,
        text=True,
        check=True,
        env=env_for(tmp_path, VISAVIS_SIGNALING__PORT="9999"),
    ).stdout
    assert "ring_timeout = 45.0" in out
    assert "port = 9999" in out
    assert "hunter2" not in out and 'shared_secret = "**********"' in out
    bad = subprocess.run(
        [*VISAVIS, "config", "--config", str(tmp_path / "missing.toml")],
        capture_output=True,
        text=True,
        env=env_for(tmp_path),
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_serve_runs_every_part_and_stops_on_sigterm(tmp_path: Path) -> None:
    metrics = free_port()
    args = ("--metrics-port", str(metrics), "--realm", "example.org", "--no-tls")
    with serve(tmp_path / "data", *args) as server:
        from tests.test_processes import scrape

        # signaling's metrics, and the relay's child's in the same scrape
        scrape(f"http://127.0.0.1:{metrics}", "visavis_ws_connections", "visavis_relay")
        assert server.url("relay", "turn:").endswith("?transport=udp")
        assert server.url("signaling", "http://127.0.0.1:")
        assert server.sfu_url
    assert server.process.returncode == 0, server.log()  # SIGTERM: a clean stop
    assert "stopping" in server.log()
    assert (tmp_path / "data" / "visavis.sqlite3").exists()


MEDIA_STACK = ("/av/", "/av.libs/", "/aiortc/")  # PyAV, its ffmpeg copies, aiortc's codecs


@pytest.mark.parametrize("role", ["relay", "sfu", "signaling", "all"])
def test_serve_maps_no_client_media_stack(tmp_path: Path, role: str) -> None:
    """Each process of a server imports what it runs: no aiortc, no PyAV/ffmpeg shared
    objects (role all: signaling's process and the relay's and the SFU's children)."""
    with serve(tmp_path / "data", "--role", role) as server:
        pids = [server.pid, *children(server.pid).values()]
        maps = {pid: Path(f"/proc/{pid}/maps").read_text() for pid in pids}
        assert server.endpoints, server.log()
    # role all: signaling, the relay and an SFU worker per core (the default)
    cores = len(os.sched_getaffinity(0))
    assert len(pids) == (2 + cores if role == "all" else 1), pids
    for pid, text in maps.items():
        loaded = {line.split()[-1] for line in text.splitlines() if ".so" in line}
        assert any("/_fastpath" in so or "uvloop" in so for so in loaded), loaded  # real maps
        media = sorted(so for so in loaded if any(part in so for part in MEDIA_STACK))
        assert not media, (pid, media)


@pytest.mark.parametrize("role", ["sfu", "all"])  # all: the SFU's child process says why
def test_serve_stops_when_a_part_cannot_be_imported(tmp_path: Path, role: str) -> None:
    """A broken dependency is a refusal to start, with the reason, not a missing part."""
    shadow = tmp_path / "shadow" / "OpenSSL"  # the SFU's DTLS binding (pyOpenSSL)
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("OpenSSL is broken here")\n')
    path = os.pathsep.join([str(tmp_path / "shadow"), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(
        [*visavis_command(), "serve", "--role", role],
        capture_output=True, text=True, timeout=120,
        env=env_for(tmp_path, PYTHONPATH=path, **FREE_PORTS),
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot start: the sfu part cannot be loaded: OpenSSL is broken here" in done.stderr
    assert "running (role" not in done.stdout + done.stderr


def test_a_single_part_role_runs_in_one_process(tmp_path: Path) -> None:
    """--role relay|sfu|signaling: the part in the process itself, no child processes."""
    with serve(tmp_path / "relay", "--role", "relay") as server:
        assert children(server.pid) == {}, children(server.pid)
