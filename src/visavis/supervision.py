"""What ``visavis serve`` (role all) and its media child processes say to each other.

Sans-I/O: the wire format and the restart policy, no pipes or processes here (those are
:mod:`visavis.supervisor`, the parent's side, and :mod:`visavis.child`, the child's).

The parent writes one JSON line on the child's stdin: the effective settings, secrets in
clear, so that nothing secret goes on a command line or in the environment (where ``ps``
and ``/proc/PID/cmdline`` show it) and the child runs exactly the configuration the
parent resolved (file, environment, flags, or a ``Settings`` built in a test). Later
lines on stdin are commands (``reload``, ``drain``) and the signed registration records of
the other SFU workers (``{"peer": RECORD}``, see below); end of stdin means "stop".

The child answers on its control channel (its original stdout) with one JSON line:
``{"ready": {...}}`` once its part listens, or ``{"error": "..."}`` with the reason it
cannot start (the same sentence an operator reads from ``visavis serve --role PART``).
An SFU worker then reports its load (``{"load": {...}, "record": RECORD}``) every
heartbeat: the parent places rooms on the least loaded worker, and hands the worker's
record, signed by the worker as a fleet node signs its own (:func:`visavis.fleet.record.
sign_record`), to the other workers unchanged: the parent is their registry, and a
cascade link between two workers is checked by the record, as between fleet nodes.

The SFU part runs as ``sfu.workers`` worker processes (one per core by default): this
module also says how many, and what each one's settings are (its ports, its node id).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.metrics_core import Metric
from pydantic import SecretStr
from pydantic_core import to_jsonable_python

from visavis.config import Settings
from visavis.fleet.settings import uses_registry

#: Commands the parent may send after the settings line.
COMMANDS = ("reload", "drain")


class WireError(ValueError):
    """A line on the supervision channel that is not what the other side sends."""


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_reveal(v) for v in value]
    return value


def hello_line(settings: Settings, part: str, metrics_socket: str) -> bytes:
    """The first line the parent writes: the part to run, its settings, where to serve
    its metrics. Secrets are in clear: this goes down a pipe, never to a log."""
    data = _reveal(settings.model_dump(mode="python"))
    data.update(role=part, metrics_port=None)  # the parent serves /metrics for everyone
    hello = {"part": part, "metrics_socket": metrics_socket, "settings": data}
    return json.dumps(hello, default=to_jsonable_python).encode() + b"\n"


@dataclass(frozen=True)
class Hello:
    part: str
    metrics_socket: str
    settings: Settings


def parse_hello(line: bytes) -> Hello:
    try:
        data = json.loads(line)
        settings = Settings.model_validate(data["settings"])
        return Hello(str(data["part"]), str(data["metrics_socket"]), settings)
    except (ValueError, KeyError, TypeError) as exc:
        # Never echo the line: it holds the secrets.
        raise WireError(f"unreadable settings from the parent ({type(exc).__name__})") from exc


def command_line(command: str) -> bytes:
    if command not in COMMANDS:
        raise WireError(f"unknown command {command!r}")
    return json.dumps({"command": command}).encode() + b"\n"


def peer_line(record: str) -> bytes:
    """Another SFU worker's signed record (the worker checks it before it trusts it)."""
    return json.dumps({"peer": record}).encode() + b"\n"


@dataclass(frozen=True)
class Peer:
    """Another worker's signed registration record, as the parent passed it on."""

    record: str


def parse_command(line: bytes) -> str | Peer:
    try:
        data = json.loads(line)
        if "peer" in data:
            return Peer(str(data["peer"]))
        command = data["command"]
    except (ValueError, KeyError, TypeError) as exc:
        raise WireError("unreadable command from the parent") from exc
    if command not in COMMANDS:
        raise WireError(f"unknown command {command!r}")
    return str(command)


@dataclass(frozen=True)
class WorkerLoad:
    """What an SFU worker carries, reported every heartbeat: its rooms and participants,
    the share of a core it used and the packets it forwarded per second since the last."""

    rooms: int = 0
    participants: int = 0
    cpu: float = 0.0
    pps: float = 0.0
    record: str = ""  # its signed registration record, for the other workers' cascade


def load_line(load: WorkerLoad) -> bytes:
    body = {
        "rooms": load.rooms,
        "participants": load.participants,
        "cpu": round(load.cpu, 4),
        "pps": round(load.pps, 1),
    }
    return json.dumps({"load": body, "record": load.record}).encode() + b"\n"


@dataclass(frozen=True)
class Ready:
    """Where a started part listens: what signaling hands out and what serve prints."""

    endpoints: dict[str, list[str]]
    sfu_url: str | None = None


def ready_line(ready: Ready) -> bytes:
    body = {"endpoints": ready.endpoints, "sfu_url": ready.sfu_url}
    return json.dumps({"ready": body}).encode() + b"\n"


def error_line(reason: str) -> bytes:
    return json.dumps({"error": reason}).encode() + b"\n"


def parse_report(line: bytes) -> Ready | WorkerLoad | str:
    """A child's report: :class:`Ready`, its :class:`WorkerLoad`, or the reason (str) it
    could not start."""
    try:
        data = json.loads(line)
        if "load" in data:
            load = data["load"]
            return WorkerLoad(
                rooms=int(load["rooms"]),
                participants=int(load["participants"]),
                cpu=float(load["cpu"]),
                pps=float(load["pps"]),
                record=str(data.get("record", "")),
            )
        if "error" in data:
            return str(data["error"])
        body = data["ready"]
        endpoints = {str(k): [str(u) for u in v] for k, v in body["endpoints"].items()}
        url = body.get("sfu_url")
        return Ready(endpoints, None if url is None else str(url))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise WireError(f"unreadable report from the child: {line[:200]!r}") from exc


@dataclass
class RestartBackoff:
    """How long to wait before restarting a child that died: ``first`` seconds, doubling
    per consecutive failure up to ``longest``; a child that stayed up ``steady`` seconds
    earns a fresh start. Times are passed in (monotonic seconds)."""

    first: float = 0.5
    longest: float = 30.0
    steady: float = 60.0
    _next: float = field(default=0.0, init=False)

    def delay(self, started_at: float, died_at: float) -> float:
        """The wait before the next start, given when the dead child had started."""
        if died_at - started_at >= self.steady or self._next == 0.0:
            self._next = self.first
        wait = self._next
        self._next = min(self._next * 2, self.longest)
        return wait

    def failed_start(self) -> float:
        """A restart that did not get ready: the wait before the next try."""
        wait = max(self._next, self.first)
        self._next = min(wait * 2, self.longest)
        return wait


# -- SFU workers ---------------------------------------------------------------------


def worker_count(settings: Settings, cores: int) -> int:
    """How many SFU worker processes this role runs (0: no SFU; 1: one, in this process
    for role sfu).

    ``sfu.workers`` 0 ("auto") means one per core the process may run on (``cores``),
    where devices can reach each worker: every worker has its own control URL, so an
    ``sfu.public_url`` (a reverse proxy's) must say where each is (``{worker}``), else
    auto means one. Role sfu needs a fleet registry (a Redis bus) for more than one: each
    worker is then a node of the fleet; without one, signaling (another process) knows a
    single URL.

    :raises ValueError: an explicit ``sfu.workers`` that cannot work, with the sentence
        to show."""
    sfu = settings.sfu
    if settings.role not in ("all", "sfu"):
        return 0
    if settings.role == "sfu" and not uses_registry(settings):
        if sfu.workers > 1:
            raise ValueError(
                f"sfu.workers = {sfu.workers} with --role sfu needs a fleet registry (a "
                "redis:// bus_url): without one, signaling knows only sfu.public_url, one "
                "worker's URL. Set sfu.workers = 1 (VISAVIS_SFU__WORKERS) or use Redis"
            )
        return 1
    if sfu.public_url and "{worker}" not in sfu.public_url:
        if sfu.workers > 1:
            raise ValueError(
                f"sfu.public_url names one control URL for {sfu.workers} SFU workers: put "
                "{worker} in it (e.g. wss://sfu.example.org/sfu/{worker}, with a proxy route "
                "per worker: worker i listens on sfu.port + i * sfu.worker_port_step) or set "
                "sfu.workers = 1"
            )
        return 1
    return sfu.workers or max(1, cores)


def worker_name(index: int, count: int) -> str:
    """The part name of worker ``index`` (``sfu`` when it is the only one): its metrics
    label and, prefixed with ``visavis-``, its process name."""
    return "sfu" if count == 1 else f"sfu-{index}"


def worker_settings(settings: Settings, index: int, count: int) -> Settings:
    """Worker ``index``'s settings: each fixed port moved up by ``index *
    sfu.worker_port_step`` (0 stays "any free port"), ``{worker}`` in ``sfu.public_url``
    replaced by the index, and its own node id (``NODE-index``, the parent's when it is
    the only worker), which its join tokens name: a worker refuses another's room."""
    sfu = settings.sfu
    if count == 1:  # a worker is one SFU: it never starts workers of its own
        return settings.model_copy(update={"sfu": sfu.model_copy(update={"workers": 1})})
    shift = index * sfu.worker_port_step

    def moved(port: int | None) -> int | None:
        return port + shift if port else port

    update: dict[str, Any] = {
        "workers": 1,
        "port": moved(sfu.port),
        "media_port": moved(sfu.media_port),
        "tcp_port": moved(sfu.tcp_port),
    }
    if sfu.public_url:
        update["public_url"] = sfu.public_url.replace("{worker}", str(index))
    return settings.model_copy(
        update={"sfu": sfu.model_copy(update=update), "node_id": f"{settings.node_id}-{index}"}
    )


def usable_cores(affinity: Iterable[int]) -> int:
    """The cores this process may run on (``os.sched_getaffinity(0)``)."""
    return max(1, len(set(affinity)))


def merge_families(children: Sequence[Iterable[Metric]]) -> list[Metric]:
    """The children's metrics as one exposition: families of the same name (every SFU
    worker exports the same ones) become one, samples with the same name and labels
    summed (counters, gauges of rooms and participants, histogram buckets all add up;
    a ``_created`` timestamp is the earliest)."""
    merged: dict[str, Metric] = {}
    sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for families in children:
        for family in families:
            target = merged.get(family.name)
            if target is None:
                target = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
                sums[family.name] = {}
            into = sums[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                value = sample.value if math.isfinite(sample.value) else 0.0
                if key in into and sample.name.endswith("_created"):
                    into[key] = min(into[key], value)
                else:
                    into[key] = into.get(key, 0.0) + value
    for name, target in merged.items():
        for (sample_name, labels), value in sums[name].items():
            target.add_sample(sample_name, dict(labels), value)
    return list(merged.values())
