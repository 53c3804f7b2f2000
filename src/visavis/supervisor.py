"""The relay and the SFU of ``visavis serve`` (role all) as supervised child processes.

Each media part runs in an interpreter of its own (:mod:`visavis.child`), so that no
Python work of signaling (HTTP, WebSockets, JSON, SQL, password hashing) ever holds the
lock a packet's handler needs: docs/processes.md has the measurement that decided it.
The parent (signaling) starts each child, hands it the settings on a pipe, waits for the
line that says where it listens (signaling hands those URLs out), restarts it with a
growing delay if it dies, passes SIGHUP's reload and SIGUSR1's drain on, shows its
metrics in ``/metrics`` and stops it on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

import visavis
from visavis.config import Settings
from visavis.supervision import (
    Ready,
    RestartBackoff,
    WireError,
    command_line,
    hello_line,
    parse_report,
)

log = logging.getLogger("visavis.supervisor")

START_TIMEOUT = 120.0  # seconds a child may take to import, bind and report (loaded CI)
STOP_GRACE = 10.0  # seconds a child may take to close before SIGKILL
COLLECT_TIMEOUT = 2.0  # seconds a scrape waits for a child's metrics


class PartFailed(RuntimeError):
    """A media part could not start; ``str()`` is the reason its process gave."""


def child_environment() -> dict[str, str]:
    """The parent's environment, with this ``visavis`` package first on the path: the
    child runs the same code even when the parent was started from a source tree."""
    env = dict(os.environ)
    root = str(Path(visavis.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


class SupervisorMetrics:
    """The parent's view of its children: up, restarts, CPU seconds per part."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.parts: list[PartProcess] = []
        self.up = Gauge(
            "visavis_part_up",
            "1 while the part's child process of visavis serve runs and is ready",
            ["part"],
            registry=registry,
        )
        self.restarts = Counter(
            "visavis_part_restarts",
            "Child processes of visavis serve started again after one died, by part",
            ["part"],
            registry=registry,
        )
        registry.register(_CpuCollector(self.parts))


class _CpuCollector:
    def __init__(self, parts: list[PartProcess]) -> None:
        self.parts = parts

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "visavis_part_cpu_seconds",
            "CPU (user + system) used by the part's current child process",
            labels=["part"],
        )
        tick = os.sysconf("SC_CLK_TCK")
        for part in self.parts:
            pid = part.pid
            if pid is None:
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            family.add_metric([part.name], (int(fields[11]) + int(fields[12])) / tick)
        yield family


def _read_unix(path: str, timeout: float) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


class _ChildCollector:
    """A child's own metrics, read from its Unix socket at scrape time (it collects them
    on its own loop); a child that is down or slow is left out of that scrape."""

    def __init__(self, part: PartProcess) -> None:
        self.part = part

    def collect(self) -> Iterable[Metric]:
        if not self.part.running:
            return ()
        try:
            text = _read_unix(self.part.metrics_socket, COLLECT_TIMEOUT)
            return list(text_string_to_metric_families(text))
        except (OSError, ValueError) as exc:
            log.warning("metrics of the %s left out of this scrape: %s", self.part.name, exc)
            return ()


class PartProcess:
    """One media part in a child process, restarted when it dies (a
    :class:`~visavis.service.Service` for :class:`~visavis.node.Node`)."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        run_dir: Path,
        registry: CollectorRegistry,
        metrics: SupervisorMetrics,
    ) -> None:
        self.name = name
        self.settings = settings
        self.metrics_socket = str(run_dir / f"{name}.sock")
        self.process: asyncio.subprocess.Process | None = None
        self.ready: Ready | None = None
        self.restarts = 0
        self._registry = registry
        self._metrics = metrics
        self._collector = _ChildCollector(self)
        self._backoff = RestartBackoff()
        self._started_at = 0.0
        self._watch: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def pid(self) -> int | None:
        process = self.process
        return process.pid if process is not None and process.returncode is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None and self.ready is not None

    @property
    def control_url(self) -> str | None:
        """The SFU's control WebSocket URL, as the child reported it."""
        return self.ready.sfu_url if self.ready is not None else None

    def endpoints(self) -> list[str]:
        """Where the part listens (the last report: a restart on fixed ports keeps them)."""
        return list(self.ready.endpoints.get(self.name, [])) if self.ready is not None else []

    async def start(self) -> None:
        self.ready = await self._spawn()
        self._registry.register(self._collector)
        self._metrics.parts.append(self)
        self._watch = asyncio.create_task(self._supervise(), name=f"supervise-{self.name}")

    async def _spawn(self) -> Ready:
        try:
            process = self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "visavis.child",
                self.name,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=child_environment(),
            )
        except OSError as exc:
            raise PartFailed(f"cannot run a process for the {self.name}: {exc}") from exc
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(hello_line(self.settings, self.name, self.metrics_socket))
        try:
            await process.stdin.drain()
            line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
        except TimeoutError:
            await self._stop(process)
            raise PartFailed(f"the {self.name} did not start within {START_TIMEOUT:g} s") from None
        except (ConnectionError, BrokenPipeError):
            line = b""
        if not line:
            code = await process.wait()
            raise PartFailed(
                f"the {self.name} process {_describe_exit(code)} before it was ready "
                "(its log is above)"
            )
        try:
            report = parse_report(line)
        except WireError as exc:
            await self._stop(process)
            raise PartFailed(str(exc)) from exc
        if isinstance(report, str):
            await self._stop(process)
            raise PartFailed(report)
        self._started_at = time.monotonic()
        self._metrics.up.labels(self.name).set(1)
        return report

    async def _supervise(self) -> None:
        """Wait for the child to die; start a new one after a growing delay."""
        while True:
            process = self.process
            assert process is not None
            code = await process.wait()
            if self._closing:
                return
            self._metrics.up.labels(self.name).set(0)
            wait = self._backoff.delay(self._started_at, time.monotonic())
            log.error(
                "the %s process (pid %d) %s; restarting it in %.1f s",
                self.name,
                process.pid,
                _describe_exit(code),
                wait,
            )
            while True:
                await asyncio.sleep(wait)
                try:
                    self.ready = await self._spawn()
                except PartFailed as exc:
                    wait = self._backoff.failed_start()
                    log.error("the %s cannot restart: %s; next try in %.1f s", self.name, exc, wait)
                    continue
                break
            self.restarts += 1
            self._metrics.restarts.labels(self.name).inc()
            log.warning(
                "the %s runs again (pid %s): %s", self.name, self.pid, " ".join(self.endpoints())
            )

    def _send(self, command: str) -> None:
        process = self.process
        if process is None or process.returncode is not None or process.stdin is None:
            log.warning("%s: the %s process is not running", command, self.name)
            return
        process.stdin.write(command_line(command))

    def reload(self) -> None:
        """SIGHUP: the child reloads what it can (the relay's TLS certificate)."""
        self._send("reload")

    def drain(self) -> None:
        """SIGUSR1: the SFU child drains its fleet node."""
        self._send("drain")

    async def _stop(self, process: asyncio.subprocess.Process) -> None:
        """End of stdin asks the child to close; SIGKILL if it has not within the grace."""
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE)
        except TimeoutError:
            log.error("the %s process did not stop within %g s: killing it", self.name, STOP_GRACE)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def close(self) -> None:
        self._closing = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self.process is not None:
            await self._stop(self.process)
        with contextlib.suppress(KeyError):
            self._registry.unregister(self._collector)
        with contextlib.suppress(ValueError):
            self._metrics.parts.remove(self)
        self._metrics.up.labels(self.name).set(0)
