"""The real ``visavis serve``, as the README starts it, in a subprocess for tests.

Tests of what ships run the product's own entry point (its event loop policy, its
defaults, its imports), not a server assembled in the test process. ``serve()`` starts
the command on free ports with its own data directory, waits until it has printed where
each part listens (it prints them only once every part has started) and, when signaling
runs, until ``/readyz`` answers 200; on exit it stops the process (SIGTERM, then SIGKILL)
and, if the test failed, the process's output is in the exception message.

    with serve(tmp_path) as server:
        server.http_url        # http://127.0.0.1:PORT
        server.endpoints["relay"]
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

#: Every fixed default port replaced by "any free port", so tests never collide.
FREE_PORTS = {
    "VISAVIS_SIGNALING__PORT": "0",
    "VISAVIS_RELAY__LISTENING_PORT": "0",
    "VISAVIS_RELAY__TLS_LISTENING_PORT": "0",
    "VISAVIS_SFU__PORT": "0",
    "VISAVIS_SFU__MEDIA_PORT": "0",
}
READY_LINE = "Press Ctrl-C to stop."
#: What a server that browsers or SDK clients call in a test sets. The SFU drops a
#: participant with no media for dead_timeout (10 s); a client starved of CPU on this shared
#: 2-core machine (several Chromium encoders) can take longer from join to first packet. It
#: rejoins either way; 30 s keeps a test about the client, not about the machine's load.
SLOW_CLIENTS = {"VISAVIS_SFU__DEAD_TIMEOUT": "30"}


def visavis_command() -> list[str]:
    """The installed ``visavis`` console script next to this interpreter (what the README
    runs), falling back to ``python -m visavis.cli`` where no script is installed."""
    script = Path(sys.executable).with_name("visavis")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "visavis.cli"]


@dataclass
class Served:
    """A running ``visavis serve`` process and where its parts listen."""

    process: subprocess.Popen[str]
    data_dir: Path
    endpoints: dict[str, list[str]] = field(default_factory=dict)
    output: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, part: str, prefix: str) -> str:
        """The first endpoint of ``part`` starting with ``prefix``."""
        for url in self.endpoints.get(part, []):
            if url.startswith(prefix):
                return url
        raise KeyError(f"{part} has no {prefix} endpoint: {self.endpoints}")

    @property
    def http_url(self) -> str:
        return self.url("signaling", "http")

    @property
    def ws_url(self) -> str:
        return self.url("signaling", "ws")

    @property
    def sfu_url(self) -> str:
        return self.url("sfu", "ws")

    def log(self) -> str:
        return "".join(self.output)


def children(pid: int) -> dict[str, int]:
    """The live child processes of ``pid`` by name (``/proc/PID/comm``): with role all,
    ``visavis-relay`` and ``visavis-sfu``."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :]
        state, ppid = rest.split()[:2]
        if int(ppid) == pid and state != "Z":
            found[name] = int(stat.parent.name)
    return found


def _pump(stream: Iterator[str], sink: list[str], ready: threading.Event) -> None:
    for line in stream:
        sink.append(line)
        if READY_LINE in line:
            ready.set()
    ready.set()  # the process ended: stop waiting either way


def _parse_endpoints(lines: Sequence[str]) -> dict[str, list[str]]:
    """``  relay      stun:127.0.0.1:3478`` lines printed between the banner and READY_LINE."""
    found: dict[str, list[str]] = {}
    started = False
    for line in lines:
        if " running (role " in line:
            started = True
            continue
        if not started:
            continue
        if READY_LINE in line:
            break
        parts = line.split()
        if len(parts) >= 2 and line.startswith("  ") and parts[0] not in ("data",):
            found.setdefault(parts[0], []).append(parts[1])
    return found


def _wait_ready(url: str, deadline: float, process: subprocess.Popen[str]) -> None:
    while time.monotonic() < deadline and process.poll() is None:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/readyz", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.05)  # polling interval of a readiness wait, not a fixed delay
    raise TimeoutError(f"{url}/readyz never answered 200")


@contextlib.contextmanager
def serve(
    data_dir: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    cwd: Path | None = None,
    wrapper: Sequence[str] = (),
    free_ports: bool = True,
) -> Iterator[Served]:
    """Run ``visavis serve ARGS`` with free ports and ``data_dir``; yield once it is ready.

    ``env`` adds or overrides environment variables (``VISAVIS_*`` settings); a value of
    ``""`` removes a variable (e.g. one of FREE_PORTS, to test a default).
    ``wrapper`` goes in front of the command (e.g. ``ip netns exec NS``: the caller then
    checks ``/readyz`` itself, from inside); ``free_ports=False`` keeps the configured
    ports (in a namespace of its own, nothing else holds them).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = FREE_PORTS if free_ports else {}
    environ = {**os.environ, **ports, "COLUMNS": "400", "PYTHONUNBUFFERED": "1"}
    for key, value in (env or {}).items():
        if value == "":
            environ.pop(key, None)
        else:
            environ[key] = value
    command = [*wrapper, *visavis_command(), "serve", "--data-dir", str(data_dir), *args]
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=environ,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    served = Served(process, data_dir)
    ready = threading.Event()
    assert process.stdout is not None
    pump = threading.Thread(target=_pump, args=(process.stdout, served.output, ready), daemon=True)
    pump.start()
    try:
        deadline = time.monotonic() + timeout
        if not ready.wait(timeout) or process.poll() is not None:
            raise RuntimeError(
                f"`{' '.join(command)}` did not start (exit {process.poll()}):\n{served.log()}"
            )
        served.endpoints = _parse_endpoints(served.output)
        if "signaling" in served.endpoints and not wrapper:
            _wait_ready(served.http_url, deadline, process)
        yield served
    except BaseException as exc:
        exc.add_note(f"visavis serve output:\n{served.log()}")
        raise
    finally:
        stop(process)
        pump.join(timeout=5)


def served_fixture(
    name: str, scope: Literal["module", "package", "session"] = "module", **settings: str
) -> Any:
    """A pytest fixture (assign it to the fixture's name) yielding a ``visavis serve`` of its
    own in a fresh data directory ``name``, with SLOW_CLIENTS and ``settings`` (``VISAVIS_*``
    environment variables) for the tests of one module or package."""
    import pytest

    @pytest.fixture(scope=scope)
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
        with serve(tmp_path_factory.mktemp(name), env={**SLOW_CLIENTS, **settings}) as served:
            yield served

    return fixture


def stop(process: subprocess.Popen[str], grace: float = 10.0) -> None:
    """SIGTERM (visavis closes every part), SIGKILL if it does not exit within ``grace``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
