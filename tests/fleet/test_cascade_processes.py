"""A room cascaded over two SFU nodes, with the real processes: 2 signaling nodes (regions
eu and us), 2 SFU nodes (one per region) on PostgreSQL and Redis, aiortc participants
(the Python SDK) on each side. Each participant joins the SFU node of its signaling
node's region; everyone decodes everyone across the node-to-node link and hears the same
dominant speaker; a link from a node the registry does not know is refused and counted.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path

import aioice.ice
import pytest
from websockets.asyncio.client import connect

from tests.fleet.cluster import SECRET, fleet
from tests.fleet.test_fleet_processes import Watcher, decoding_all, login, wait_until
from tests.services import fresh_postgres, fresh_redis_prefix
from visavis.client.sfu_session import PatternTrack, SfuSession, ToneTrack
from visavis.sfu.cascade import sign_hello
from visavis.signaling import messages as m

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def metric(port: int, name: str, labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}}"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_room_cascades_over_two_regions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda *a, **k: ["127.0.0.1"])
    metrics = free_port()
    regions = {
        "sfu-a": {"VISAVIS_FLEET__REGION": "eu", "VISAVIS_METRICS_PORT": str(metrics)},
        "sfu-b": {"VISAVIS_FLEET__REGION": "us"},
        "sig-0": {"VISAVIS_FLEET__REGION": "eu"},
        "sig-1": {"VISAVIS_FLEET__REGION": "us"},
    }
    async with fresh_postgres() as db, fresh_redis_prefix() as prefix:
        with fleet(tmp_path, db, prefix, sfu=2, node_env=regions) as f:
            handles = [f"{x}@example.com" for x in ("alice", "bob", "carol", "dave")]
            # login() alternates signaling nodes: alice, carol on eu; bob, dave on us.
            async with login(f, handles) as (alice, bob, carol, dave):
                watchers = [Watcher(s) for s in (alice, bob, carol, dave)]
                media: list[SfuSession] = []
                try:
                    call_id = (await alice.request("call.invite", handles=handles[1:])).call_id
                    assert call_id is not None
                    for s, w in zip((bob, carol, dave), watchers[1:], strict=True):
                        await w.first(m.CallIncoming, call_id)
                        await s.request("call.answer", call_id=call_id)
                    joins = [await w.next_room(call_id) for w in watchers]
                    nodes = [f.node_of(j.url) for j in joins]
                    assert nodes == ["sfu-a", "sfu-b", "sfu-a", "sfu-b"], nodes
                    for i, j in enumerate(joins):
                        session = SfuSession(
                            j.url,
                            j.token,
                            audio=ToneTrack(amplitude=0.9 if i == 3 else 0.0),
                            video=PatternTrack(seed=i),
                        )
                        media.append(session)
                        await session.join(20)
                    took = await wait_until(lambda: decoding_all(media, 0.0), 40)
                    print(f"everyone decodes everyone across the link after {took:.2f} s")
                    dave_id = media[3].participant_id
                    for s in media:
                        await s.wait_for(lambda s=s: s.dominant_speaker == dave_id, 15)
                    # Participants on each node are listed as in the room on the other.
                    for s in media:
                        assert len(s.participants) == 3, s.participants

                    # A link from a node the registry does not know: refused and counted.
                    hello = sign_hello(SECRET, "sfu-z", "sfu-a", "nonce-1", now=time.time())
                    async with connect(f.sfu["sfu-a"].sfu_url) as ws:
                        await ws.send(json.dumps({"type": "cascade", "token": hello}))
                        reply = json.loads(await ws.recv())
                    assert reply["code"] == "unauthorized" and "registry" in reply["message"]
                    refused = metric(
                        metrics, "visavis_sfu_cascade_refused_total", 'reason="unknown_node"'
                    )
                    assert refused == 1
                    # The call's media kept flowing meanwhile.
                    since = time.monotonic()
                    await wait_until(lambda: decoding_all(media, since), 10)
                finally:
                    for s in media:
                        await s.close()
                    for w in watchers:
                        w.stop()
