"""`visavis serve` (role all) as an operator runs it: one command, signaling in it, the
relay and the SFU in child processes it supervises (docs/processes.md)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from tests.served import children, serve, visavis_command
from tests.test_cli import free_port
from tests.waiting import until_sync

SECRET = "a-shared-secret-nobody-may-see"


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def nice(pid: int, tid: int | None = None) -> int:
    """The niceness of a process (its main thread) or of one of its threads."""
    path = f"/proc/{pid}/task/{tid or pid}/stat"
    return int(Path(path).read_text().rsplit(")", 1)[1].split()[16])


def stun_binding(port: int, timeout: float = 10.0) -> bool:
    """A STUN Binding request answered with a success response (RFC 8489)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        tid = os.urandom(12)
        sock.sendto(b"\x00\x01\x00\x00\x21\x12\xa4\x42" + tid, ("127.0.0.1", port))
        data = sock.recv(2048)
    return data[:2] == b"\x01\x01" and data[8:20] == tid


def sfu_workers(pid: int) -> dict[str, int]:
    """The SFU's worker processes of ``visavis serve`` ``pid`` by name: ``visavis-sfu``
    when there is one, ``visavis-sfu-0``, ``visavis-sfu-1``, ... when there are more."""
    return {n: p for n, p in children(pid).items() if n.startswith("visavis-sfu")}


def worker_parts(pid: int) -> list[str]:
    """The SFU workers' part names (their ``visavis_part_*{part}`` label)."""
    return sorted(n.removeprefix("visavis-") for n in sfu_workers(pid))


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line == name:
            return float(line.rsplit(" ", 1)[1])
    return None


def scrape(url: str, *needles: str) -> str:
    """``/metrics`` once it shows every needle: on a loaded machine a child that does not
    answer within 2 s is left out of that scrape (by design), so poll (bounded)."""
    text = ""

    def complete() -> bool:
        nonlocal text
        text = httpx.get(f"{url}/metrics", timeout=10).text
        return all(n in text for n in needles)

    until_sync(complete, f"/metrics with {needles}", within=60)
    return text


def test_relay_and_sfu_run_as_named_children_and_show_in_one_metrics(tmp_path: Path) -> None:
    env = {"VISAVIS_SHARED_SECRET": SECRET}
    with serve(tmp_path / "data", env=env) as server:
        kids = children(server.pid)
        # By default the SFU runs a worker per core this process may use.
        cores = len(os.sched_getaffinity(server.pid))
        parts = ["sfu"] if cores == 1 else [f"sfu-{i}" for i in range(cores)]
        assert worker_parts(server.pid) == sorted(parts), kids
        assert "visavis-relay" in kids and len(kids) == 1 + cores, kids
        for pid in kids.values():  # the secret reaches them by pipe, not on a command line
            assert SECRET not in Path(f"/proc/{pid}/cmdline").read_text()
        port = int(server.url("relay", "stun:").rsplit(":", 1)[1])
        assert stun_binding(port)
        text = scrape(server.http_url, "visavis_relay_allocations", "visavis_sfu_")
        assert "visavis_ws_connections" in text  # signaling's, same scrape
        assert metric(text, 'visavis_part_up{part="relay"}') == 1.0
        for part in parts:
            assert metric(text, f'visavis_part_up{{part="{part}"}}') == 1.0
            cpu = metric(text, f'visavis_part_cpu_seconds_total{{part="{part}"}}')
            assert cpu is not None and cpu > 0
        # The workers' own series come as one (summed), not once per worker.
        assert text.count("# TYPE visavis_sfu_packets_forwarded_total counter") == 1
        assert metric(text, "visavis_sfu_rooms") == 0.0
        assert "[relay]" in server.log() and f"[{parts[-1]}]" in server.log()  # tagged lines
    assert server.process.returncode == 0, server.log()
    assert SECRET not in server.log()


def test_a_killed_child_is_restarted_on_its_ports(tmp_path: Path) -> None:
    relay_port = free_port(socket.SOCK_DGRAM)
    env = {"VISAVIS_RELAY__LISTENING_PORT": str(relay_port)}
    with serve(tmp_path / "data", "--no-tls", env=env) as server:
        old = children(server.pid)["visavis-relay"]
        os.kill(old, signal.SIGKILL)
        until_sync(
            lambda: (
                children(server.pid).get("visavis-relay", old) != old
                and "the relay runs again" in server.log()
            ),
            "a new relay process",
            within=60,
        )
        assert f"the relay process (pid {old}) was killed by SIGKILL; restarting" in server.log()
        # Signaling runs signaling_nice (10) steps below its children, and a child it
        # restarts does not inherit that: it runs at the priority serve started with.
        base = os.getpriority(os.PRIO_PROCESS, 0)
        assert nice(server.pid) == min(base + 10, 19)
        assert nice(children(server.pid)["visavis-relay"]) == base
        assert all(nice(pid) == base for pid in sfu_workers(server.pid).values())
        assert stun_binding(relay_port)  # the same port, answered by the new process
        text = scrape(server.http_url, "visavis_relay_allocations")  # the new child's
        assert metric(text, 'visavis_part_restarts_total{part="relay"}') == 1.0
        assert metric(text, 'visavis_part_up{part="relay"}') == 1.0
        assert server.process.poll() is None
    assert server.process.returncode == 0, server.log()


def test_sigterm_leaves_no_process_behind(tmp_path: Path) -> None:
    with serve(tmp_path / "data") as server:
        kids = children(server.pid)
        assert len(kids) >= 2, kids
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(30)
    assert server.process.returncode == 0, server.log()
    until_sync(lambda: not any(alive(pid) for pid in kids.values()), "children gone", within=15)


def test_sigterm_to_the_whole_group_is_a_quiet_stop(tmp_path: Path) -> None:
    """systemd's default KillMode and a terminal signal every process of the group at
    once: the children's exits then are part of the stop, not deaths to restart."""
    with serve(tmp_path / "data", wrapper=("setsid",)) as server:
        kids = children(server.pid)
        assert len(kids) >= 2, kids
        os.killpg(server.pid, signal.SIGTERM)
        server.process.wait(30)
    assert server.process.returncode == 0, server.log()
    assert "restarting" not in server.log(), server.log()
    until_sync(lambda: not any(alive(pid) for pid in kids.values()), "children gone", within=15)


def test_the_children_die_with_a_killed_parent(tmp_path: Path) -> None:
    with serve(tmp_path / "data") as server:
        kids = children(server.pid)
        assert len(kids) >= 2, kids
        server.process.kill()
        server.process.wait(30)
        until_sync(lambda: not any(alive(pid) for pid in kids.values()), "orphans exit", within=20)


def test_a_child_that_cannot_listen_stops_the_start(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("VISAVIS_")}
        env.update(
            VISAVIS_DATA_DIR=str(tmp_path), VISAVIS_SIGNALING__PORT="0",
            VISAVIS_RELAY__LISTENING_PORT="0", VISAVIS_RELAY__TLS_LISTENING_PORT="0",
            VISAVIS_SFU__PORT="0", VISAVIS_SFU__MEDIA_PORT=str(port),
        )  # fmt: skip
        started = time.monotonic()
        done = subprocess.run(
            [*visavis_command(), "serve"], env=env, capture_output=True, text=True, timeout=120
        )
    err = " ".join(done.stderr.split())
    assert done.returncode == 1, err[-3000:]
    assert f"cannot start: the SFU cannot listen on 127.0.0.1:{port} (address already in use)" in (
        err
    ), err[-3000:]
    assert "change sfu.media_port (VISAVIS_SFU__MEDIA_PORT)" in err
    assert "running (role" not in done.stdout + done.stderr
    assert time.monotonic() - started < 120
