"""Run SDK peers inside the lab and collect their JSON reports (used by tests and benchmarks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.served import READY_LINE

from . import server
from .lab import SERVER_IP, Client, Lab

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
# This checkout's tests and sources (a worktree's src before any installed copy); wide
# lines so the server's endpoint lines are never wrapped.
ENV = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")]), "COLUMNS": "400"}
SERVER_URL = f"http://{SERVER_IP}:8080"
LANS = {"open1": "open", "open2": "open", "cone1": "cone", "cone2": "cone",
        "sym1": "sym", "sym2": "sym", "udpblock1": "udpblock", "udpblock2": "udpblock"}


def read_events(path: Path) -> list[dict[str, Any]]:
    events = []
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith("{"):
                events.append(json.loads(line))
    return events


def wait_for_line(path: Path, predicate: Any, within: float, proc: Any) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text().splitlines():
                if predicate(line):
                    return line
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    err = Path(str(path).replace(".out", ".err"))
    raise AssertionError(
        f"no expected line in {path} within {within} s; stderr:\n"
        + (err.read_text()[-3000:] if err.exists() else "")
    )


@dataclass
class Side:
    records: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    ready: dict[str, Any]
    stderr: str


class NatLab:
    """The lab plus its server, and a way to run calls between two clients."""

    def __init__(self, lab: Lab, logs: Path) -> None:
        self.lab = lab
        self.logs = logs
        self._runs = 0
        # Peers trust the server's TLS certificate (TURN over TLS) as their CA file.
        self.env = {**ENV, "SSL_CERT_FILE": str(logs / "server" / "cert.pem")}

    def clients(self, lan: str) -> list[Client]:
        return self.lab.lans[lan].clients

    def peer_argv(self, *args: str) -> list[str]:
        return [PYTHON, "-m", "tests.netlab.peer", "--server", SERVER_URL, *args]

    def run_pair(
        self, caller: Client, callee: Client, *, calls: int = 1, within: float = 90,
        extra: tuple[str, ...] = (),
    ) -> tuple[Side, Side]:
        """One or more calls from ``caller`` to ``callee``; both sides' reports."""
        return self.start_pair(caller, callee, calls=calls, extra=extra).finish(within)

    def start_pair(
        self, caller: Client, callee: Client, *, calls: int = 1, extra: tuple[str, ...] = (),
        caller_extra: tuple[str, ...] = (), callee_extra: tuple[str, ...] = (),
    ) -> Pair:
        """Start the calls of :meth:`run_pair` without waiting for them to end."""
        self._runs += 1
        run = f"{self._runs}-{os.getpid()}"
        a, b = f"a{run}@lab.example.com", f"b{run}@lab.example.com"
        log_a, log_b = self.logs / f"run{run}-caller", self.logs / f"run{run}-callee"
        callee_proc = self.lab.spawn(
            callee.ns, self.peer_argv("--me", b, "--role", "callee", "--calls", str(calls),
                                      *extra, *callee_extra), log_b, env=self.env,
        )
        wait_for_line(Path(f"{log_b}.out"), lambda line: '"ready"' in line, 30, callee_proc)
        caller_proc = self.lab.spawn(
            caller.ns, self.peer_argv("--me", a, "--role", "caller", "--peer", b,
                                      "--calls", str(calls), *extra, *caller_extra), log_a,
            env=self.env,
        )
        return Pair(caller_proc, callee_proc, log_a, log_b)


@dataclass
class Pair:
    """The two peer processes of a run and their logs."""

    caller: subprocess.Popen[bytes]
    callee: subprocess.Popen[bytes]
    caller_log: Path
    callee_log: Path

    def wait_media(self, within: float) -> None:
        """Until both sides reported decoded frames (``{"event": "media"}``)."""
        for log, proc in ((self.caller_log, self.caller), (self.callee_log, self.callee)):
            wait_for_line(Path(f"{log}.out"), lambda line: '"media"' in line, within, proc)

    def finish(self, within: float) -> tuple[Side, Side]:
        deadline = time.monotonic() + within
        for proc in (self.caller, self.callee):
            try:
                proc.wait(max(1.0, deadline - time.monotonic()))
            except Exception:
                proc.kill()  # its own process group's leader, started by this run
                proc.wait(5)
        return side_of(self.caller_log), side_of(self.callee_log)


def side_of(log: Path) -> Side:
    events = read_events(Path(f"{log}.out"))
    err = Path(f"{log}.err")
    return Side(
        records=[e for e in events if e["event"] == "call"],
        errors=[e for e in events if e["event"] == "error"],
        ready=next((e for e in events if e["event"] == "ready"), {}),
        stderr=err.read_text()[-4000:] if err.exists() else "",
    )


def build(lab: Lab, logs: Path, lans: dict[str, str] | None = None) -> NatLab:
    """Every LAN kind twice (or ``lans``), one client each (two on cone1), and the server."""
    lab.start()
    for name, kind in (lans or LANS).items():
        lab.add_lan(name, kind)  # type: ignore[arg-type]
        lab.add_client(name)
    if lans is None:
        lab.add_client("cone1")  # a second client on one LAN: the host-path row
    config, _ = server.write_config(logs / "server")
    proc = lab.spawn(lab.pub, server.command(config), logs / "server", env=ENV)
    wait_for_line(logs / "server.err", lambda line: READY_LINE in line, 60, proc)
    return NatLab(lab, logs)
