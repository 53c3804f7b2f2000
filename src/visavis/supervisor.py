"""The relay and the SFU workers of ``visavis serve`` as supervised child processes.

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
import functools
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
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
    WorkerLoad,
    command_line,
    hello_line,
    merge_families,
    parse_report,
    peer_line,
    worker_name,
    worker_settings,
)

log = logging.getLogger("visavis.supervisor")

START_TIMEOUT = 120.0  # seconds a child may take to import, bind and report (loaded CI)
STOP_GRACE = 10.0  # seconds a child may take to close before SIGKILL
CLEAN_EXIT_GRACE = 0.5  # seconds to see whether the parent is stopping too
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
        self.reported = Gauge(
            "visavis_sfu_worker_participants",
            "Participants an SFU worker had at its last load report (what room placement "
            "reads: a room whose worker is full overflows to another, docs/processes.md)",
            ["part"],
            registry=registry,
        )
        registry.register(_CpuCollector(self.parts))
        registry.register(_ChildrenCollector(self.parts))


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


class _ChildrenCollector:
    """The children's own metrics, read from their Unix sockets at scrape time (each
    collects them on its own loop) and merged: the SFU workers' same-named series are
    summed, so ``/metrics`` shows the SFU as a whole (``visavis_part_*{part}`` per
    worker). A child that is down or slow is left out of that scrape."""

    def __init__(self, parts: list[PartProcess]) -> None:
        self.parts = parts

    def describe(self) -> Iterable[Metric]:
        return ()  # names vary with what the children export: no duplicate check here

    def collect(self) -> Iterable[Metric]:
        found = []
        for part in list(self.parts):
            if not part.running:
                continue
            try:
                text = _read_unix(part.metrics_socket, COLLECT_TIMEOUT)
                found.append(list(text_string_to_metric_families(text)))
            except (OSError, ValueError) as exc:
                log.warning("metrics of the %s left out of this scrape: %s", part.name, exc)
        return merge_families(found)


class Spawner:
    """Starts the children from two threads of its own, made before anything is niced.

    A niced signaling (``signaling_nice``) must not pass its niceness on to a media child
    it restarts: a process inherits the niceness of the thread that forks it, and cannot
    lower it again without privileges. These threads keep the priority the process
    started with; :meth:`lower_others` renices every other thread of the process.
    """

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(2, "visavis-spawn")
        both = threading.Barrier(2)

        def enter() -> int:
            both.wait(10)  # holds the first thread, so the pool makes the second
            return threading.get_native_id()

        self.tids = {f.result() for f in [self.pool.submit(enter) for _ in range(2)]}

    def lower_others(self, by: int) -> None:
        """Raise the niceness of every thread of this process but the spawner's by
        ``by``; threads started later by those threads inherit it."""
        for task in Path("/proc/self/task").iterdir():
            tid = int(task.name)
            if tid in self.tids:
                continue
            with contextlib.suppress(OSError):  # a thread that just ended
                now = os.getpriority(os.PRIO_PROCESS, tid)
                os.setpriority(os.PRIO_PROCESS, tid, min(now + by, 19))

    def close(self) -> None:
        self.pool.shutdown(wait=False)


async def _exit_code(process: subprocess.Popen[bytes]) -> int:
    """Wait, without a thread, for ``process`` to end (a pidfd turns readable)."""
    loop = asyncio.get_running_loop()
    fd = os.pidfd_open(process.pid)
    ended: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ended.done():
            ended.set_result(None)

    loop.add_reader(fd, readable)
    try:
        if process.poll() is None:
            await ended
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return process.wait()


class PartProcess:
    """One media part (the relay, or one SFU worker: ``sfu``, ``sfu-N``) in a child
    process, restarted when it dies (a :class:`~visavis.service.Service` for
    :class:`~visavis.node.Node`). ``listeners`` hear of each death (False) and of each
    restart that got ready (True): signaling moves a dead worker's rooms."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        run_dir: Path,
        metrics: SupervisorMetrics,
        spawner: Spawner,
    ) -> None:
        self.name = name
        self.kind = name.partition("-")[0]  # relay, sfu
        self.settings = settings
        self.metrics_socket = str(run_dir / f"{name}.sock")
        self.process: subprocess.Popen[bytes] | None = None
        self.ready: Ready | None = None
        self.load: WorkerLoad | None = None  # an SFU worker's last report
        self.listeners: list[Callable[[bool], None]] = []
        self.reports: list[Callable[[WorkerLoad], None]] = []  # hear each load report
        self.restarts = 0
        self._metrics = metrics
        self._spawner = spawner
        self._reports: asyncio.Task[None] | None = None
        self._channel: asyncio.ReadTransport | None = None  # the child's report pipe
        self._backoff = RestartBackoff()
        self._started_at = 0.0
        self._exit: asyncio.Task[int] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def pid(self) -> int | None:
        """The current child's process id while it runs."""
        if self.process is None or self._exit is None or self._exit.done():
            return None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.pid is not None and self.ready is not None

    @property
    def control_url(self) -> str | None:
        """The SFU's control WebSocket URL, as the child reported it."""
        return self.ready.sfu_url if self.ready is not None else None

    @property
    def node_id(self) -> str:
        """The node id the child runs as (an SFU worker's join tokens name it)."""
        return self.settings.node_id

    def endpoints(self) -> list[str]:
        """Where the part listens (the last report: a restart on fixed ports keeps them)."""
        return list(self.ready.endpoints.get(self.kind, [])) if self.ready is not None else []

    async def start(self) -> None:
        self.ready = await self._spawn()
        self._metrics.parts.append(self)
        self._watch = asyncio.create_task(self._supervise(), name=f"supervise-{self.name}")

    def _popen(self) -> subprocess.Popen[bytes]:
        """On a spawner thread: start the child, hand it its settings."""
        process = subprocess.Popen(
            [sys.executable, "-m", "visavis.child", self.name],  # name: visavis-NAME
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=child_environment(),
            bufsize=0,
        )
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it died at once: its exit says why
            process.stdin.write(hello_line(self.settings, self.kind, self.metrics_socket))
        return process

    async def _spawn(self) -> Ready:
        loop = asyncio.get_running_loop()
        try:
            process = await loop.run_in_executor(self._spawner.pool, self._popen)
        except OSError as exc:
            raise PartFailed(f"cannot run a process for the {self.name}: {exc}") from exc
        self.process = process
        if process.stdin is not None:  # a stuck child must never block the parent's loop
            os.set_blocking(process.stdin.fileno(), False)
        self._exit = asyncio.create_task(_exit_code(process))
        # The reports are read on the loop (no thread waits for a child to get ready:
        # all of them start at once, however many workers).
        reader = asyncio.StreamReader()
        self._channel, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), process.stdout
        )
        try:
            line = await asyncio.wait_for(reader.readline(), START_TIMEOUT)
        except TimeoutError:
            await self._stop()
            raise PartFailed(f"the {self.name} did not start within {START_TIMEOUT:g} s") from None
        if not line:
            code = await self._exit
            self._channel.close()
            raise PartFailed(
                f"the {self.name} process {_describe_exit(code)} before it was ready "
                "(its log is above)"
            )
        try:
            report = parse_report(line)
        except WireError as exc:
            await self._stop()
            raise PartFailed(str(exc)) from exc
        if isinstance(report, str):
            await self._stop()
            raise PartFailed(report)
        if not isinstance(report, Ready):
            await self._stop()
            raise PartFailed(f"the {self.name} reported its load before it was ready")
        self._started_at = time.monotonic()
        self._metrics.up.labels(self.name).set(1)
        self._reports = asyncio.create_task(self._read_reports(reader))
        return report

    async def _read_reports(self, reader: asyncio.StreamReader) -> None:
        """The child's reports after ready (an SFU worker's load) until it exits."""
        while line := await reader.readline():
            try:
                report = parse_report(line)
            except WireError as exc:
                log.warning("the %s: %s", self.name, exc)
                continue
            if isinstance(report, WorkerLoad):
                self.load = report
                self._metrics.reported.labels(self.name).set(report.participants)
                for listener in list(self.reports):
                    listener(report)

    def _tell(self, up: bool) -> None:
        for listener in list(self.listeners):
            try:
                listener(up)
            except Exception:  # a listener's bug must not stop the supervision
                log.exception("a listener of the %s failed", self.name)

    async def _supervise(self) -> None:
        """Wait for the child to die; start a new one after a growing delay."""
        while True:
            assert self.process is not None and self._exit is not None
            pid = self.process.pid
            code = await asyncio.shield(self._exit)
            if code == 0 and not self._closing:
                # A clean exit is mostly a SIGTERM to the whole group (systemd, a
                # terminal): give the parent's own handler the moment it needs.
                await asyncio.sleep(CLEAN_EXIT_GRACE)
            if self._closing:
                return
            self._metrics.up.labels(self.name).set(0)
            self.load = None
            self._metrics.reported.labels(self.name).set(0)
            self._tell(False)
            wait = self._backoff.delay(self._started_at, time.monotonic())
            log.error(
                "the %s process (pid %d) %s; restarting it in %.1f s",
                self.name,
                pid,
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
            self._tell(True)

    def _send(self, command: str) -> None:
        if self.pid is None:
            log.warning("%s: the %s process is not running", command, self.name)
            return
        try:
            self._write(command_line(command))
        except OSError as exc:  # it died meanwhile (the supervisor restarts it), or stuck
            log.warning("%s: the %s process did not take it: %s", command, self.name, exc)

    def _write(self, line: bytes) -> None:
        """One whole line on the child's stdin, or OSError (BlockingIOError: the pipe is
        full, the child is not reading): a line up to PIPE_BUF is written whole or not
        at all."""
        process = self.process
        if process is None or process.stdin is None:
            raise BrokenPipeError("no process")
        if len(line) > select.PIPE_BUF:
            raise ValueError(f"a line of {len(line)} bytes would not be written atomically")
        process.stdin.write(line)

    def pass_record(self, record: str) -> None:
        """Hand this running SFU worker another worker's signed record (dropped when its
        pipe is full: the next heartbeat brings a fresher one)."""
        if not self.running:
            return
        try:
            self._write(peer_line(record))
        except OSError as exc:
            log.debug("the %s did not take a peer record: %s", self.name, exc)

    def reload(self) -> None:
        """SIGHUP: the child reloads what it can (the relay's TLS certificate)."""
        self._send("reload")

    def drain(self) -> None:
        """SIGUSR1: the SFU child drains its fleet node."""
        self._send("drain")

    async def _stop(self) -> None:
        """End of stdin asks the child to close; SIGKILL if it has not within the grace."""
        process, exited = self.process, self._exit
        if process is None or exited is None:
            return
        if self._reports is not None:
            self._reports.cancel()
        if self._channel is not None:
            self._channel.close()
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            await asyncio.wait_for(asyncio.shield(exited), STOP_GRACE)
        except TimeoutError:
            log.error("the %s process did not stop within %g s: killing it", self.name, STOP_GRACE)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await exited
        if process.stdout is not None:
            process.stdout.close()

    def closing(self) -> None:
        """The server is stopping: an exit from now on is no reason to restart."""
        self._closing = True

    async def close(self) -> None:
        self._closing = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self._stop()
        with contextlib.suppress(ValueError):
            self._metrics.parts.remove(self)
        self._metrics.up.labels(self.name).set(0)


class SfuWorkers:
    """The SFU part as ``count`` worker processes (a :class:`~visavis.service.Service`):
    worker i runs on its own ports and node id (:func:`~visavis.supervision.worker_settings`);
    signaling places each room on one of them (:class:`visavis.workers.WorkerFleet`, or the
    fleet registry, where each worker is a node)."""

    name = "sfu"

    def __init__(
        self,
        settings: Settings,
        count: int,
        run_dir: Path,
        metrics: SupervisorMetrics,
        spawner: Spawner,
    ) -> None:
        def worker(i: int) -> PartProcess:
            name, own = worker_name(i, count), worker_settings(settings, i, count)
            return PartProcess(name, own, run_dir, metrics, spawner)

        self.workers = [worker(i) for i in range(count)]
        for w in self.workers:  # each worker's record reaches the others (their registry)
            w.reports.append(functools.partial(self._pass_on, w))

    def _pass_on(self, source: PartProcess, load: WorkerLoad) -> None:
        if not load.record:
            return
        for worker in self.workers:
            if worker is not source:
                worker.pass_record(load.record)

    async def start(self) -> None:
        results = await asyncio.gather(*(w.start() for w in self.workers), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.close()
            raise failures[0]

    @property
    def control_url(self) -> str | None:
        """The first running worker's control URL (one SFU URL, where one is asked for)."""
        return next((w.control_url for w in self.workers if w.running), None)

    def endpoints(self) -> list[str]:
        return [url for w in self.workers for url in w.endpoints()]

    def drain(self) -> None:
        for worker in self.workers:
            worker.drain()

    def closing(self) -> None:
        for worker in self.workers:
            worker.closing()

    async def close(self) -> None:
        await asyncio.gather(*(w.close() for w in self.workers))
