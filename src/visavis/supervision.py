"""What ``visavis serve`` (role all) and its media child processes say to each other.

Sans-I/O: the wire format and the restart policy, no pipes or processes here (those are
:mod:`visavis.supervisor`, the parent's side, and :mod:`visavis.child`, the child's).

The parent writes one JSON line on the child's stdin: the effective settings, secrets in
clear, so that nothing secret goes on a command line or in the environment (where ``ps``
and ``/proc/PID/cmdline`` show it) and the child runs exactly the configuration the
parent resolved (file, environment, flags, or a ``Settings`` built in a test). Later
lines on stdin are commands (``reload``, ``drain``); end of stdin means "stop".

The child answers on its control channel (its original stdout) with one JSON line:
``{"ready": {...}}`` once its part listens, or ``{"error": "..."}`` with the reason it
cannot start (the same sentence an operator reads from ``visavis serve --role PART``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr
from pydantic_core import to_jsonable_python

from visavis.config import Settings

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


def parse_command(line: bytes) -> str:
    try:
        command = json.loads(line)["command"]
    except (ValueError, KeyError, TypeError) as exc:
        raise WireError("unreadable command from the parent") from exc
    if command not in COMMANDS:
        raise WireError(f"unknown command {command!r}")
    return str(command)


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


def parse_report(line: bytes) -> Ready | str:
    """A child's report: :class:`Ready`, or the reason (str) it could not start."""
    try:
        data = json.loads(line)
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
