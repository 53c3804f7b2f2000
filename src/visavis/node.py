"""One visavis process: the parts its role names, started in order, closed in reverse.

With role all, the relay and the SFU's workers each run in a child process of their own
(:mod:`visavis.supervisor`) and signaling in this one (docs/processes.md); a single-part
role runs its part in this process, except role sfu with several workers (in a fleet).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from visavis.config import Settings
from visavis.fleet.settings import uses_registry
from visavis.listen_errors import ListenError
from visavis.service import Service

log = logging.getLogger(__name__)

NO_ICE_SERVERS = (
    "signaling hands devices NO STUN/TURN server (no signaling.turn_urls and no relay in "
    "this process): calls between devices behind NAT will not connect. Set "
    "signaling.turn_urls (VISAVIS_SIGNALING__TURN_URLS) to the relay's URLs "
    "(docs/operations.md)."
)


# The server class of each part: imported only when the role runs that part, so a relay
# process never loads the SFU or signaling (and none of them loads aiortc or PyAV).
PARTS = {
    "relay": ("visavis.relay.server", "RelayServer"),
    "sfu": ("visavis.sfu.server", "SfuServer"),
    "signaling": ("visavis.signaling.server", "SignalingServer"),
}


class PartUnavailable(RuntimeError):
    """A part the role asks for cannot be imported: the process must not start without it."""


def _server_class(part: str) -> Any:
    module, name = PARTS[part]
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise PartUnavailable(f"the {part} part cannot be loaded: {exc}") from exc


class Node:
    """Starts relay, SFU and signaling as the role asks, wiring their URLs together."""

    def __init__(self, settings: Settings, *, media_in_process: bool = False) -> None:
        """``media_in_process`` (role all only): the relay and the SFU on this process's
        loop instead of child processes, for tests that reach into the SFU (a tap on its
        send path, its rooms); ``visavis serve`` never sets it (docs/processes.md)."""
        self.settings = settings
        self.media_in_process = media_in_process and settings.role == "all"
        # One registry for every part: signaling's /metrics (or --metrics-port) shows all.
        self.registry = CollectorRegistry()
        self.metrics_server: Any | None = None
        self.services: list[Service] = []
        self.relay: Any | None = None
        self.sfu: Any | None = None
        self.signaling: Any | None = None
        self.relay_agent: Any | None = None  # the relay's heartbeat into the fleet registry
        self.run_dir: Path | None = None  # role all: the children's metrics sockets
        self.spawner: Any | None = None  # role all: starts the children
        self.workers = 0  # SFU worker processes (0: the SFU, if any, runs in this process)

    def _wants(self, part: str) -> bool:
        return self.settings.role in ("all", part)

    async def start(self) -> None:
        settings = self.settings
        if settings.role == "all":
            # Signaling's loop shares the GIL with the hashing threads only now; the
            # setting stays for configurations that set it (docs/processes.md).
            sys.setswitchinterval(settings.switch_interval_ms / 1000)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.ensure_shared_secret()  # before the children: they all get this one
        self.workers = self._worker_count()
        try:
            if (settings.role == "all" and not self.media_in_process) or self.workers > 1:
                await self._start_children()
            for part in ("relay", "sfu"):
                if self.media_in_process or (settings.role == part and self.spawner is None):
                    setattr(self, part, await self._start_media(part))
            if settings.role == "relay" and uses_registry(settings):
                await self._register_relay(self.relay)
            if self._wants("signaling"):
                self.signaling = _server_class("signaling")(
                    settings,
                    ice_urls=self._ice_urls,
                    # With Redis the SFU nodes register and signaling places rooms on them.
                    sfu_url=None if self._fleet_registry else self._sfu_url,
                    fleet=self._worker_fleet(),
                    metrics_registry=self.registry,
                )
                await self._start(self.signaling)
                if not self._ice_urls():
                    log.warning(NO_ICE_SERVERS)
            if settings.metrics_port is not None:
                self.metrics_server, _ = start_http_server(
                    settings.metrics_port, addr="127.0.0.1", registry=self.registry
                )
        except BaseException:
            await self.close()
            raise

    async def _start_media(self, part: str) -> Any:
        """The relay or the SFU in this process (its role)."""
        cls = _server_class(part)
        # A part that takes only its own settings slice builds itself from the whole.
        cls = getattr(cls, "from_settings", cls)
        server = cls(self.settings, metrics_registry=self.registry)
        await self._start(server)
        return server

    def _worker_count(self) -> int:
        """How many SFU worker processes to run (``sfu.workers``; 0: one per core)."""
        from visavis.supervision import usable_cores, worker_count

        if self.media_in_process:
            return 0
        try:
            return worker_count(self.settings, usable_cores(os.sched_getaffinity(0)))
        except ValueError as exc:
            from visavis.supervisor import PartFailed

            raise PartFailed(str(exc)) from exc

    async def _start_children(self) -> None:
        """Role all: the relay and the SFU's workers in child processes (started side by
        side), so that signaling's work never delays a packet; role sfu with several
        workers: the workers. Their real URLs come back before signaling starts. Each
        child registers itself in a fleet (Redis) as its role would (each worker as a
        node of its own)."""
        from visavis.supervisor import PartProcess, SfuWorkers, Spawner, SupervisorMetrics

        self.run_dir = Path(tempfile.mkdtemp(prefix="visavis-"))
        self.spawner = Spawner()
        metrics = SupervisorMetrics(self.registry)
        children: list[Any] = []
        if self.settings.role == "all":
            relay = PartProcess("relay", self.settings, self.run_dir, metrics, self.spawner)
            children.append(relay)
        sfu = SfuWorkers(self.settings, self.workers, self.run_dir, metrics, self.spawner)
        children.append(sfu)
        results = await asyncio.gather(*(c.start() for c in children), return_exceptions=True)
        failures = []
        for child, result in zip(children, results, strict=True):
            if isinstance(result, BaseException):
                failures.append(result)
            else:
                self.services.append(child)
        self.sfu = sfu
        if self.settings.role == "all":
            self.relay = children[0]
        if failures:
            raise failures[0]

    def _worker_fleet(self) -> Any | None:
        """Role all without a fleet registry: signaling places rooms on this server's SFU
        workers by load and moves a dead worker's rooms (:mod:`visavis.workers`)."""
        if self.spawner is None or self._fleet_registry or self.sfu is None:
            return None
        from visavis.fleet.placement import Limits
        from visavis.workers import WorkerFleet

        fleet = self.settings.fleet
        return WorkerFleet(
            self.sfu.workers,
            capacity=fleet.capacity,
            limits=Limits(cpu_limit=fleet.cpu_limit),
            cascade=fleet.cascade,
        )

    async def _start(self, service: Service) -> None:
        try:
            await service.start()
        except OSError as exc:  # say which part, and which setting to change
            raise ListenError(service.name, exc, self.settings) from exc
        self.services.append(service)

    async def _register_relay(self, relay: Any) -> None:
        """List the relay in the fleet registry (as SFU nodes are), with its ICE URLs:
        signaling hands devices healthy relays of their region (docs/fleet.md)."""
        from visavis.fleet.agent import FleetAgent, Load

        def load() -> Load:
            core = relay.core
            if core is None:
                return Load(urls=tuple(relay.endpoints()))
            to_peer, _, to_client, _ = core.totals()
            return Load(
                urls=tuple(relay.endpoints()),
                allocations=len(core.allocations),
                packets=to_peer + to_client,
            )

        self.relay_agent = FleetAgent(self.settings, "relay", load)
        await self.relay_agent.start()

    def _ice_urls(self) -> list[str]:
        if self.settings.signaling.turn_urls:
            return list(self.settings.signaling.turn_urls)
        if self.relay is not None:
            return [u for u in self.relay.endpoints() if u.startswith(("stun:", "turn:", "turns:"))]
        return []

    @property
    def _fleet_registry(self) -> bool:
        return uses_registry(self.settings) and not self.settings.sfu.public_url

    def _sfu_url(self) -> str | None:
        if self.settings.sfu.public_url:
            return self.settings.sfu.public_url
        if self.sfu is not None and self.sfu.control_url:
            return str(self.sfu.control_url)
        return None

    def drain(self) -> None:
        """Drain this process's SFU node: no new rooms, its rooms move (SIGUSR1)."""
        if self.spawner is not None and self.sfu is not None:
            self.sfu.drain()  # the SFU's child process drains
            return
        fleet = getattr(self.sfu, "fleet", None)
        if fleet is not None:
            fleet.drain()
        else:
            log.warning("drain: this process runs no SFU registered in a fleet")

    async def close(self) -> None:
        for service in self.services:  # children that exit from now on stay down
            closing = getattr(service, "closing", None)
            if closing is not None:
                closing()
        if self.relay_agent is not None:
            with contextlib.suppress(Exception):
                await self.relay_agent.close()
            self.relay_agent = None
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server = None
        while self.services:
            service = self.services.pop()
            with contextlib.suppress(Exception):
                await service.close()
        if self.spawner is not None:
            self.spawner.close()
            self.spawner = None
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None

    def lower_signaling_priority(self) -> None:
        """Role all: renice signaling's process (every thread but the spawner's) by
        ``signaling_nice``, so that under CPU contention the kernel runs a woken relay or
        SFU before signaling's work (docs/processes.md has the measurement). Only
        ``visavis serve`` calls it: it changes the whole process."""
        if self.spawner is None or self.settings.role != "all" or self.settings.signaling_nice == 0:
            return
        self.spawner.lower_others(self.settings.signaling_nice)
        log.info(
            "signaling runs %d nice steps below the relay and the SFU (signaling_nice)",
            self.settings.signaling_nice,
        )

    def reload(self) -> None:
        """SIGHUP: each part that has something to reload (the relay's TLS certificate)."""
        for service in self.services:
            reload = getattr(service, "reload", None)
            if reload is not None:
                reload()

    def endpoints(self) -> dict[str, list[str]]:
        found = {s.name: s.endpoints() for s in self.services}
        if self.metrics_server is not None:
            found["metrics"] = [f"http://127.0.0.1:{self.metrics_server.server_port}/metrics"]
        return found
