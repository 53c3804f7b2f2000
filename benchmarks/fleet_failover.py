"""Failover time of a group call when its SFU node is killed: p50/p99 over repeated kills.

    .venv/bin/python benchmarks/fleet_failover.py --kills 10

Real processes, as in tests/fleet/test_fleet_processes.py: one signaling node and three SFU
nodes (`visavis serve --role ...`) on PostgreSQL and Redis (fresh database and key prefix),
three aiortc participants in one group call. Each round SIGKILLs the node the call is on,
measures for every participant the time from the kill to ``call.room_moved`` (detection:
the participants' ``call.media_lost`` reports, or else the registry TTL + the monitor's
check) and to decoding video from every other participant
again (recovery), then starts a replacement SFU node so the fleet keeps three.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aioice.ice

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fleet.cluster import SECRET, fleet
from tests.served import serve
from tests.services import fresh_postgres, fresh_redis_prefix

from visavis.client.session import Session
from visavis.client.sfu_session import PatternTrack, SfuSession, ToneTrack
from visavis.signaling import messages as m

PASSWORD = "correct horse battery"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def until(predicate: object, limit: float) -> float:
    assert callable(predicate)
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > limit:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)  # polling the sessions' frame clocks
    return time.monotonic()


async def run(kills: int) -> None:
    aioice.ice.get_host_addresses = lambda *a, **k: ["127.0.0.1"]  # loopback only
    detection: list[float] = []
    recovery: list[float] = []
    async with fresh_postgres() as db, fresh_redis_prefix() as prefix:
        tmp = Path(tempfile.mkdtemp(prefix="fleet-failover-"))
        with fleet(tmp, db, prefix, signaling=1, sfu=3) as f, contextlib.ExitStack() as extra:
            url = f.signaling[0].http_url
            sessions = [
                await Session.login(url, f"{n}@example.com", PASSWORD, signup=True)
                for n in ("alice", "bob", "carol")
            ]
            moved_at: dict[int, float] = {}

            async def watch(i: int, s: Session) -> None:
                async with s.events() as events:
                    async for event in events:
                        if isinstance(event, m.CallRoomMoved):
                            moved_at.setdefault(i, time.monotonic())

            watchers = [asyncio.create_task(watch(i, s)) for i, s in enumerate(sessions)]
            alice, bob, carol = sessions
            async with alice.events() as a_events, bob.events() as b_events, \
                    carol.events() as c_events:
                result = await alice.request(
                    "call.invite", handles=["bob@example.com", "carol@example.com"]
                )
                call_id = result.call_id or ""
                rooms = [await a_events.next(m.CallRoom, 20)]
                for s, ev in ((bob, b_events), (carol, c_events)):
                    await ev.next(m.CallIncoming, 20)
                    await s.request("call.answer", call_id=call_id)
                    rooms.append(await ev.next(m.CallRoom, 20))
            media = [
                SfuSession(r.url, r.token, audio=ToneTrack(0.0), video=PatternTrack(seed=i))
                for i, r in enumerate(rooms)
            ]
            for session, device in zip(media, sessions, strict=True):
                await session.join(20)
                session.follow(device, call_id)

            def decoding(since: float) -> bool:
                return all(
                    s.last_frame[o.participant_id or ""].get("video", 0.0) > since
                    for s in media for o in media if o is not s
                )

            await until(lambda: decoding(0.0), 30)
            for round_ in range(kills):
                node = f.node_of(media[0].url)
                moved_at.clear()
                f.sfu[node].process.kill()
                killed = time.monotonic()
                # Only frames from the new node count (not ones buffered before the kill).
                done = await until(
                    lambda: all(s.moves == round_ + 1 for s in media)  # noqa: B023
                    and decoding(max(s.moved_at or 0.0 for s in media)),
                    30,
                )
                detection += [t - killed for t in moved_at.values()]
                recovery.append(done - killed)
                print(
                    f"round {round_ + 1}: moved after "
                    f"{', '.join(f'{t - killed:.2f}' for t in moved_at.values())} s, "
                    f"everyone decoding everyone after {done - killed:.2f} s",
                    flush=True,
                )
                del f.sfu[node]
                name = f"sfu-spare{round_ + 1}"
                f.sfu[name] = extra.enter_context(
                    serve(tmp / name, "--role", "sfu",
                          env={**f.env, "VISAVIS_NODE_ID": name}, timeout=120)
                )
            for session in media:
                await session.close()
            for w in watchers:
                w.cancel()
            for s in sessions:
                await s.close()
    print(
        f"{kills} kills, SIGKILL → call.room_moved: p50 {percentile(detection, 0.5):.2f} s, "
        f"p99 {percentile(detection, 0.99):.2f} s; SIGKILL → every participant decoding "
        f"every other again: p50 {percentile(recovery, 0.5):.2f} s, "
        f"p99 {percentile(recovery, 0.99):.2f} s, max {max(recovery):.2f} s, "
        f"mean {statistics.fmean(recovery):.2f} s"
    )
    print(f"(shared secret {SECRET!r}, fleet.ttl 2 s, check 0.5 s: the defaults)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(run(args.kills))


if __name__ == "__main__":
    main()
