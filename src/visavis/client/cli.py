"""``visavis call`` and ``visavis answer``: 1:1 calls from a terminal, with a live status line.

Both sign in as a new device (or use ``--token``), send a test pattern (or ``--media
FILE``), optionally record what they receive (``--record out.mp4``), and print one status
line per second: state, path (host/srflx/relay over udp/tcp), bitrates, RTT, loss, frames
decoded, resolution and, with the test pattern on the other side, glass-to-glass latency.
A failed call prints its reason and exits with status 1. ``--json`` prints a summary on
stdout at the end for scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from visavis.client.call import FAILURE_REASONS, Call
from visavis.client.e2ee import enable_e2ee
from visavis.client.errors import AuthError, CallFailed, ClientError, RequestError
from visavis.client.media import MediaSource
from visavis.client.session import Session
from visavis.config import default_data_dir
from visavis.e2ee.identity import DeviceIdentity, Pins
from visavis.signaling import messages as m

EXIT_FAILED = 1


def _options(fn: Any) -> Any:
    options = [
        click.option("--server", envvar="VISAVIS_SERVER", default="http://127.0.0.1:8080",
                     show_default=True, help="Signaling URL (env VISAVIS_SERVER)."),
        click.option("--user", "user", envvar="VISAVIS_USER",
                     help="Your handle (env VISAVIS_USER)."),
        click.option("--password", envvar="VISAVIS_PASSWORD",
                     help="Your password (env VISAVIS_PASSWORD; asked when missing)."),
        click.option("--token", envvar="VISAVIS_TOKEN",
                     help="A device token instead of --user/--password (env VISAVIS_TOKEN)."),
        click.option("--signup", is_flag=True, help="Create the account first if it is new."),
        click.option("--device-name", default="visavis-cli", show_default=True),
        click.option("--identity-dir", type=click.Path(path_type=Path),
                     envvar="VISAVIS_IDENTITY_DIR",
                     help="Where this device's end-to-end identity key and the pinned keys "
                     "of contacts are kept (env VISAVIS_IDENTITY_DIR; default: "
                     "$XDG_DATA_HOME/visavis/client)."),
        click.option("--media", "media_file", type=click.Path(path_type=Path),
                     help="Send this file (audio and video, looped) instead of a test pattern."),
        click.option("--size", default="320x240", show_default=True,
                     help="Test pattern size WIDTHxHEIGHT."),
        click.option("--fps", default=15, show_default=True, help="Test pattern frame rate."),
        click.option("--record", type=click.Path(path_type=Path),
                     help="Save what the other side sends to this file (.mp4, .mkv, .webm)."),
        click.option("--duration", type=float,
                     help="Hang up after this many connected seconds (default: until Ctrl-C "
                     "or the other side hangs up)."),
        click.option("--setup-timeout", default=20.0, show_default=True,
                     help="Seconds from answer to a working media path."),
        click.option("--turn-transport", type=click.Choice(["auto", "udp", "tcp", "tls"]),
                     default="auto", show_default=True),
        click.option("--relay-only", is_flag=True, help="Send media only through TURN."),
        click.option("--host-address", "host_addresses", multiple=True,
                     help="Use only this local address for ICE host candidates (repeatable)."),
        click.option("--json", "as_json", is_flag=True,
                     help="Print a JSON summary on stdout at the end."),
        click.option("--quiet", is_flag=True, help="No status line."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


class _Status:
    """One status line on stderr: rewritten in place on a terminal, else one per period."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self._last = 0.0

    def show(self, text: str, *, force: bool = False) -> None:
        if self.quiet:
            return
        if self.tty:
            click.echo(f"\r\x1b[2K{text}", nl=False, err=True)
        elif force or time.monotonic() - self._last >= 1.0:
            click.echo(text, err=True)
            self._last = time.monotonic()

    def say(self, text: str) -> None:
        if self.tty and not self.quiet:
            click.echo("\r\x1b[2K", nl=False, err=True)
        click.echo(text, err=True)


def _source(media_file: Path | None, size: str, fps: int, audio_only: bool) -> MediaSource:
    if media_file is not None:
        return MediaSource.file(media_file)
    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError as exc:
        raise click.UsageError(f"--size wants WIDTHxHEIGHT, got {size!r}") from exc
    source = MediaSource.test_pattern(width, height, fps)
    if audio_only:
        source.video = None
    return source


async def _session(opts: dict[str, Any]) -> Session:
    options: dict[str, Any] = {
        "host_addresses": list(opts["host_addresses"]) or None,
        "turn_transport": opts["turn_transport"],
        "ice_transport_policy": "relay" if opts["relay_only"] else "all",
        "setup_timeout": opts["setup_timeout"],
    }
    if opts["token"]:
        session = Session(opts["server"], opts["token"], **options)
        await session.connect()
        await _end_to_end(session, opts["identity_dir"])
        return session
    if not opts["user"]:
        raise click.UsageError("give --user (or VISAVIS_USER) or --token")
    password = opts["password"] or click.prompt("password", hide_input=True, err=True)
    session = await Session.login(
        opts["server"], opts["user"], password, device_name=opts["device_name"],
        signup=opts["signup"], **options,
    )
    await _end_to_end(session, opts["identity_dir"])
    return session


async def _end_to_end(session: Session, identity_dir: Path | None) -> None:
    """Sign and check DTLS fingerprints in every call, as the browser client does (it
    refuses a peer without a signed fingerprint). The identity key stays on this machine;
    contacts' keys are pinned on first use next to it, one pair of files per account."""
    folder = (identity_dir or default_data_dir() / "client") / session.handle
    await enable_e2ee(
        session, DeviceIdentity.load_or_create(folder / "identity.pem"), Pins(folder / "pins.json")
    )


async def _follow(call: Call, status: _Status, duration: float | None) -> str | None:
    """Show the status line until the call ends (or ``duration`` connected seconds pass);
    returns the call's verification code (said once, when the call connects)."""
    code: str | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        while not call.ended and not stop.is_set():
            if code is None and call.connected_at is not None and call.e2ee is not None:
                code = call.e2ee.verification_code
                status.say(f"end-to-end checked; verification code {code} (compare it aloud)")
            stats = await call.stats()
            status.show(f"{call.peer or 'call'}: {stats.status_line()}")
            if (
                duration is not None
                and call.connected_at is not None
                and time.time() - call.connected_at >= duration
            ):
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    if not call.ended:
        stats = await call.stats()
        status.show(f"{call.peer or 'call'}: {stats.status_line()}", force=True)
        await call.hangup()
    return code


async def _summary(
    call: Call | None, code: str | None = None, error: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"ok": error is None and call is not None and call.reason in (
        "hangup", "remote_hangup")}
    if call is not None:
        out.update(
            call_id=call.id,
            state=call.state,
            reason=call.reason,
            detail=call.detail,
            path=asdict(call.path) if call.path else None,
            path_kind=call.path.kind if call.path else None,
            frames_decoded=call.received.video_frames,
            audio_frames=call.received.audio_frames,
            resolution=[call.received.width, call.received.height],
            setup_seconds=(call.connected_at - call.started_at) if call.connected_at else None,
            first_frame_seconds=(call.received.first_video_at - call.started_at)
            if call.received.first_video_at else None,
            verification_code=code,
            latency_ms=sorted(call.received.latencies_ms)[len(call.received.latencies_ms) // 2]
            if call.received.latencies_ms else None,
        )
    if error is not None:
        out["error"] = error
    return out


def _finish(summary: dict[str, Any], as_json: bool, status: _Status) -> None:
    if as_json:
        click.echo(json.dumps(summary))
    reason = summary.get("reason")
    if summary.get("error"):
        status.say(f"error: {summary['error']}")
    elif summary.get("state") == "failed":
        detail = summary.get("detail") or FAILURE_REASONS.get(reason or "", "")
        status.say(f"call failed: {reason}: {detail}")
    else:
        frames = summary.get("frames_decoded", 0)
        status.say(f"call ended ({reason}); {frames} video frames decoded")
    if not summary["ok"]:
        sys.exit(EXIT_FAILED)


async def _run_call(handle: str, opts: dict[str, Any], audio_only: bool) -> dict[str, Any]:
    status = _Status(opts["quiet"])
    source = _source(opts["media_file"], opts["size"], opts["fps"], audio_only)
    try:
        session = await _session(opts)
    except (AuthError, ClientError) as exc:
        source.close()
        return {"ok": False, "error": f"cannot sign in: {exc}"}
    call: Call | None = None
    try:
        try:
            call = await session.call(
                handle, source, media="audio" if audio_only else "video",
                record=str(opts["record"]) if opts["record"] else None,
            )
        except RequestError as exc:
            source.close()
            return {"ok": False, "error": f"cannot call {handle}: {exc.message} ({exc.code})"}
        status.say(f"calling {handle} (call {call.id})…")
        code = None
        with contextlib.suppress(CallFailed):
            code = await _follow(call, status, opts["duration"])
        return await _summary(call, code)
    finally:
        await session.close()


async def _run_answer(
    caller: str | None, opts: dict[str, Any], within: float | None
) -> dict[str, Any]:
    status = _Status(opts["quiet"])
    source = _source(opts["media_file"], opts["size"], opts["fps"], False)
    try:
        session = await _session(opts)
    except (AuthError, ClientError) as exc:
        source.close()
        return {"ok": False, "error": f"cannot sign in: {exc}"}
    call: Call | None = None
    try:
        status.say(f"signed in as {session.handle}; waiting for a call…")
        async with session.events() as events:
            deadline = None if within is None else time.monotonic() + within
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    incoming: m.CallIncoming = await events.next(m.CallIncoming, left)
                except TimeoutError:
                    source.close()
                    return {"ok": False, "error": f"no call within {within:g} s"}
                if caller and incoming.caller.handle != m.normalize_handle(caller):
                    continue
                break
        status.say(f"{incoming.caller.handle} is calling; answering")
        try:
            call = await session.answer(
                incoming, source, record=str(opts["record"]) if opts["record"] else None
            )
        except RequestError as exc:
            source.close()
            return {"ok": False, "error": f"cannot answer: {exc.message} ({exc.code})"}
        code = None
        with contextlib.suppress(CallFailed):
            code = await _follow(call, status, opts["duration"])
        return await _summary(call, code)
    finally:
        await session.close()


@click.command("call")
@click.argument("handle")
@click.option("--audio-only", is_flag=True, help="An audio call.")
@_options
def call(handle: str, audio_only: bool, **opts: Any) -> None:
    """Call HANDLE and show the call's live status until it ends.

    \b
    Test pattern, 30 s, saving what comes back:
        visavis call bob@example.com --user alice@example.com --duration 30 --record bob.mp4
    A file as media:
        visavis call bob@example.com --media talk.mp4
    """
    summary = asyncio.run(_run_call(handle, opts, audio_only))
    _finish(summary, opts["as_json"], _Status(opts["quiet"]))


@click.command("answer")
@click.option("--from", "caller", help="Only answer this caller (others keep ringing).")
@click.option("--wait", "within", type=float, help="Give up after this many seconds.")
@_options
def answer(caller: str | None, within: float | None, **opts: Any) -> None:
    """Wait for a call, answer it, and show its live status until it ends.

    \b
        visavis answer --user bob@example.com --record alice.mp4
    """
    summary = asyncio.run(_run_answer(caller, opts, within))
    _finish(summary, opts["as_json"], _Status(opts["quiet"]))

