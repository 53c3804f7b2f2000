"""One media part (relay or SFU) in a child process of ``visavis serve`` (role all).

``python -m visavis.child relay|sfu|sfu-N``, started by :mod:`visavis.supervisor`, never
by hand (``sfu-N``: SFU worker N of several). Reads its settings from stdin
(:mod:`visavis.supervision`), runs the part as ``visavis serve --role PART`` would,
reports where it listens (or why it cannot) on its original stdout, then, for an SFU
worker, its load and signed registration record every heartbeat (the other workers get
the record from the parent: rooms cascade between workers as between fleet nodes),
and serves its metrics on a Unix socket the parent
reads for ``/metrics``. It stops on end of stdin (the parent closed it, or died), on SIGTERM, and
when the parent dies (PR_SET_PDEATHSIG), so that no child outlives ``visavis serve``.
Its logs go to the inherited stderr, each line tagged with the part's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import secrets
import signal
import sys
import threading
import time
from typing import BinaryIO

from prometheus_client import generate_latest

from visavis.config import Settings
from visavis.fleet.record import NodeRecord, PassedRecords, RecordError, sign_record
from visavis.fleet.settings import uses_registry
from visavis.loops import run
from visavis.node import Node, PartUnavailable
from visavis.supervision import (
    Peer,
    Ready,
    WireError,
    WorkerLoad,
    error_line,
    load_line,
    parse_command,
    parse_hello,
    ready_line,
)

log = logging.getLogger("visavis.child")

PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1
STOP_DEADLINE = 15.0  # seconds a stop may take before the process exits regardless


def _prctl(option: int, arg: int | bytes) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(option, arg, 0, 0, 0)


def _name_process(name: str) -> None:
    """What ps, top and /proc/PID/comm show: visavis-relay, visavis-sfu."""
    _prctl(PR_SET_NAME, name.encode()[:15])


def _die_with_parent(parent: int) -> None:
    """SIGTERM when the parent dies, even by SIGKILL (end of stdin covers it too)."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _control_channel() -> BinaryIO:
    """The original stdout, for reports only; stdout itself then goes to stderr, so that
    nothing a library prints can corrupt a report."""
    control = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return control


def _first_line() -> bytes:
    """The settings line, read byte by byte: a buffered read could swallow commands that
    follow it, which the event loop reads from the same pipe later."""
    line = bytearray()
    while (byte := os.read(0, 1)) and byte != b"\n":
        line += byte
    return bytes(line)


def _part(name: str) -> str:
    """The part a child name runs: ``relay``, ``sfu``, or ``sfu`` for worker ``sfu-N``."""
    part, _, index = name.partition("-")
    if (part == "relay" and not index) or (part == "sfu" and (not index or index.isdigit())):
        return part
    return ""


def main() -> None:
    name = sys.argv[1] if len(sys.argv) == 2 else ""
    part = _part(name)
    if not part:
        sys.exit("usage: python -m visavis.child relay|sfu|sfu-N (started by visavis serve)")
    parent = os.getppid()
    _name_process(f"visavis-{name}")
    _die_with_parent(parent)
    # Ctrl-C in a terminal reaches the whole process group: the parent stops us in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    control = _control_channel()
    try:
        hello = parse_hello(_first_line())
    except WireError as exc:
        control.write(error_line(str(exc)))
        sys.exit(1)
    settings = hello.settings
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s [{name}] %(name)s: %(message)s",
    )
    sys.exit(run(_run_part(part, settings, hello.metrics_socket, control)))


async def _run_part(part: str, settings: Settings, metrics_socket: str, control: BinaryIO) -> int:
    node = Node(settings)
    try:
        await node.start()
    except (PartUnavailable, OSError) as exc:
        control.write(error_line(str(exc)))
        return 1
    except Exception as exc:  # anything else: the reason, and the traceback in the log
        log.exception("the %s cannot start", part)
        control.write(error_line(f"the {part} failed to start: {type(exc).__name__}: {exc}"))
        return 1
    metrics = await _serve_metrics(node, metrics_socket)
    gc.collect()  # see cli._serve: what start built lives as long as the process
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    sfu_url = str(node.sfu.control_url) if node.sfu is not None else None
    control.write(ready_line(Ready(node.endpoints(), sfu_url)))
    log.info("%s ready (pid %d)", part, os.getpid())
    peers = _peer_records(node)
    commands = asyncio.create_task(_commands(node, stop, peers))
    reports = asyncio.create_task(_report_load(node, control)) if node.sfu is not None else None
    try:
        await stop.wait()
    finally:
        # A stop that hangs (a stuck close) must not leave the process behind.
        deadline = threading.Timer(STOP_DEADLINE, os._exit, args=(1,))
        deadline.daemon = True
        deadline.start()
        commands.cancel()
        if reports is not None:
            reports.cancel()
        metrics.close()
        with contextlib.suppress(OSError):
            os.unlink(metrics_socket)
        await node.close()
    return 0


def _peer_records(node: Node) -> PassedRecords | None:
    """An SFU worker without a fleet registry: the other workers' records the parent
    passes on, which its cascade links trust as a fleet node trusts the registry's."""
    settings = node.settings
    if node.sfu is None or uses_registry(settings) or not settings.fleet.cascade:
        return None
    records = PassedRecords(settings.ensure_shared_secret(), max_skew=settings.fleet.max_clock_skew)

    async def lookup(node_id: str) -> NodeRecord | None:
        return records.record("sfu", node_id, now=time.time())

    node.sfu.link_nodes(lookup)
    return records


async def _commands(node: Node, stop: asyncio.Event, peers: PassedRecords | None) -> None:
    """Commands (and the other workers' records) from the parent on stdin until end of
    file (the parent stops or died)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            try:
                command = parse_command(line)
            except WireError as exc:
                log.error("%s", exc)
                continue
            if isinstance(command, Peer):
                try:
                    if peers is not None:
                        peers.add(command.record, now=time.time())
                except RecordError as exc:  # links to that worker are refused (counted)
                    log.warning("refused a %s record from the parent: %s", exc.reason, exc)
                continue
            try:
                getattr(node, command)()
            except Exception:
                log.exception("%s failed", command)
    finally:
        stop.set()


async def _report_load(node: Node, control: BinaryIO) -> None:
    """Every heartbeat, the SFU's load on the control channel (the parent places rooms by
    it). Never blocks the loop: a line the pipe cannot take now is dropped (the next one
    says the same, fresher)."""
    sfu = node.sfu
    assert sfu is not None
    os.set_blocking(control.fileno(), False)
    settings, fleet = node.settings, node.settings.fleet
    secret, boot = settings.ensure_shared_secret(), secrets.token_hex(4)
    interval = fleet.heartbeat_interval
    last = (time.monotonic(), time.process_time(), sfu.stats.packets_forwarded)
    while True:
        await asyncio.sleep(interval)
        now = (time.monotonic(), time.process_time(), sfu.stats.packets_forwarded)
        span = max(now[0] - last[0], 1e-3)
        rooms, participants = sfu.occupancy()
        cpu, pps = (now[1] - last[1]) / span, max(0, now[2] - last[2]) / span
        last = now
        # The record a fleet node would write to Redis (FleetAgent.record), for the
        # other workers: where to link (control URL, media address), signed.
        record = NodeRecord(
            node_id=settings.node_id,
            kind="sfu",
            boot=boot,
            ts=time.time(),
            region=fleet.region,
            control_url=sfu.control_url,
            media=tuple(sfu.endpoints()[1:]),
            capacity=fleet.capacity,
            cpu=round(cpu, 4),
            pps=round(pps, 1),
            rooms=rooms,
            participants=participants,
        )
        signed = sign_record(secret, record, ttl=fleet.ttl)
        load = WorkerLoad(rooms, participants, cpu, pps, signed)
        try:
            control.write(load_line(load))
        except BlockingIOError:
            continue
        except OSError:  # the parent closed the channel: it is stopping us
            return


async def _serve_metrics(node: Node, path: str) -> asyncio.AbstractServer:
    """Each connection gets this part's metrics (text format), read on its own loop."""
    registry = node.registry

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(generate_latest(registry))
            await writer.drain()
        finally:
            writer.close()

    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a previous child's socket
    return await asyncio.start_unix_server(answer, path)


if __name__ == "__main__":
    main()
