"""One SDK device in a lab namespace: places or answers calls and reports them as JSON.

    python -m tests.netlab.peer --server URL --me HANDLE --role callee [--calls N]
    python -m tests.netlab.peer --server URL --me HANDLE --role caller --peer HANDLE

Prints ``{"event": "ready"}`` once signed in, one ``{"event": "call", ...}`` line per call
(absolute wall-clock times, so the orchestrator can combine both sides: every namespace
shares the kernel's clock), then ``{"event": "done"}``; failures as ``{"event": "error"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict
from typing import Any

from visavis.client.call import Call, CallStateChanged
from visavis.client.errors import CallFailed, ClientError
from visavis.client.media import MediaSource
from visavis.client.session import Session
from visavis.signaling import messages as m

PASSWORD = "netlab password"


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


class Timeline:
    """Wall-clock times of a call's state changes and decoded video frames (--timeline)."""

    def __init__(self, session: Session) -> None:
        self.states: list[tuple[float, str]] = []
        self.frames: list[float] = []
        self._events = session.events()
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        async for event in self._events:
            if isinstance(event, CallStateChanged):
                self.states.append((time.time(), event.state))

    def on_frame(self, kind: str, frame: Any) -> None:
        if kind == "video":
            self.frames.append(time.time())

    def close(self) -> None:
        self._events.close()


async def report(call: Call, args: argparse.Namespace, invited_at: float | None,
                 timeline: Timeline | None = None) -> None:
    await call.wait_connected(args.setup_timeout)
    await call.wait_frames(args.frames, within=args.setup_timeout)
    emit(event="media", call_id=call.id, at=time.time())
    await asyncio.sleep(args.seconds)  # the call's length: the window measured, not a wait
    stats = await call.stats()
    lat = sorted(call.received.latencies_ms)
    emit(
        event="call",
        call_id=call.id,
        invited_at=invited_at,
        started_at=call.started_at,
        connected_at=call.connected_at,
        first_frame_at=call.received.first_video_at,
        path=asdict(call.path) if call.path else None,
        frames=call.received.video_frames,
        audio_frames=call.received.audio_frames,
        resolution=[call.received.width, call.received.height],
        latencies_ms=lat,
        rtt_ms=stats.rtt_ms,
        loss=stats.loss_fraction,
        bitrate_in=stats.bitrate_in_bps,
        stages=call.latency_stages(),
        restarts=call.restarts,
        media_timeouts=call.media_timeouts,
        state=call.state,
        states=timeline.states if timeline else None,
        frame_times=timeline.frames if timeline else None,
    )


async def run(args: argparse.Namespace) -> None:
    width, height = (int(v) for v in args.size.split("x"))
    session = await Session.login(
        args.server, args.me, PASSWORD, signup=True, device_name=args.role,
        setup_timeout=args.setup_timeout, marker_jitter_buffer=not args.aiortc_jitter_buffer,
        media_timeout=args.media_timeout, turn_transport=args.turn_transport,
    )
    emit(event="ready", udp_ok=session.udp_ok, ice=[s.urls for s in session.rtc_ice_servers()])
    # Subscribed once for every call: a call that rings while the callee is still ending
    # the previous one waits here, so the caller needs no pause between calls.
    try:
        async with session.events() as incoming_calls:
            for _ in range(args.calls):
                source = MediaSource.test_pattern(width, height, args.fps)
                timeline = Timeline(session) if args.timeline else None
                on_frame = timeline.on_frame if timeline else None
                if args.role == "caller":
                    invited_at = time.time()
                    call = await session.call(args.peer, source, on_frame=on_frame)
                    await report(call, args, invited_at, timeline)
                    await call.hangup()
                else:
                    incoming = await incoming_calls.next(m.CallIncoming, args.wait)
                    call = await session.answer(incoming, source, on_frame=on_frame)
                    await report(call, args, None, timeline)
                    await call.wait_ended(within=30)
                if timeline:
                    timeline.close()
    except (CallFailed, ClientError, TimeoutError) as exc:
        reason = getattr(exc, "reason", type(exc).__name__)
        emit(event="error", reason=reason, detail=str(exc))
    finally:
        await session.close()
    emit(event="done")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--me", required=True)
    parser.add_argument("--role", choices=["caller", "callee"], required=True)
    parser.add_argument("--peer")
    parser.add_argument("--calls", type=int, default=1)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--size", default="160x120")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--setup-timeout", type=float, default=25.0)
    parser.add_argument("--wait", type=float, default=60.0)
    parser.add_argument("--timeline", action="store_true",
                        help="report the times of state changes and decoded video frames")
    parser.add_argument("--media-timeout", type=float, default=3.0)
    parser.add_argument("--turn-transport", choices=["auto", "udp", "tcp", "tls"],
                        default="auto", help="how to reach TURN (tls: turns:, port 5349)")
    parser.add_argument("--aiortc-jitter-buffer", action="store_true",
                        help="keep aiortc's video jitter buffer (frames wait for the next one)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
