"""A room cascaded over two SFU nodes, with the real processes: 2 signaling nodes (regions
eu and us), 2 SFU nodes (one per region) on PostgreSQL and Redis, aiortc participants
(the Python SDK) on each side. Each participant joins the SFU node of its signaling
node's region; everyone decodes everyone across the node-to-node link and hears the same
dominant speaker; a link from a node the registry does not know is refused and counted.
A relay node (``--role relay``) registers the same way: devices of its region are handed
its URLs while it lives, and not once it is killed.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import aioice.ice
import httpx
import pytest
from websockets.asyncio.client import connect

from tests.fleet.cluster import SECRET, fleet
from tests.fleet.test_fleet_processes import Watcher, decoding_all, login, wait_until
from tests.served import serve
from tests.services import fresh_postgres, fresh_redis_prefix
from visavis.client.session import Session
from visavis.client.sfu_session import PatternTrack, SfuSession, ToneTrack
from visavis.fleet.settings import FleetSettings
from visavis.sfu.cascade import sign_hello
from visavis.signaling import messages as m

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def ice_urls(session: Session) -> set[str]:
    """The STUN/TURN URLs signaling hands this device now."""
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(
            f"{session.url}/api/ice-servers",
            headers={"authorization": f"Bearer {session.token}"},
        )
    r.raise_for_status()
    return {u for server in r.json()["ice_servers"] for u in server["urls"]}


async def wait_until_async(predicate: Any, limit: float) -> float:
    """Seconds until ``await predicate()`` held (re-asked every 100 ms)."""
    start = time.monotonic()
    while not await predicate():
        assert time.monotonic() - start < limit, "condition not reached"
        await asyncio.sleep(0.1)  # polling signaling's HTTP API
    return time.monotonic() - start


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

                    # -- relay nodes register too; devices get live ones of their region
                    relay_env = {
                        **f.env,
                        "VISAVIS_NODE_ID": "relay-us",
                        "VISAVIS_FLEET__REGION": "us",
                    }
                    with serve(tmp_path / "relay", "--role", "relay", env=relay_env) as relay:
                        urls = relay.endpoints["relay"]
                        assert any(u.startswith("turn:") for u in urls), urls

                        # Dave (us) is told the relay's URLs, with credentials for it.
                        async def listed() -> bool:
                            return await ice_urls(dave) == set(urls)

                        async def dropped() -> bool:
                            return not await ice_urls(dave) & set(urls)

                        await wait_until_async(listed, 10)
                        # The operator's view lists it beside the SFU nodes.
                        shown = await asyncio.to_thread(f.cli, "sfu", "nodes", "--json")
                        assert shown.returncode == 0, shown.stderr
                        rows = {(r["kind"], r["node_id"]): r for r in json.loads(shown.stdout)}
                        assert set(rows) == {
                            ("sfu", "sfu-a"), ("sfu", "sfu-b"), ("relay", "relay-us")
                        }
                        relay_row = rows["relay", "relay-us"]
                        assert (relay_row["region"], relay_row["urls"]) == ("us", urls)
                        assert relay_row["capacity"] == FleetSettings().relay_capacity
                        text = await asyncio.to_thread(f.cli, "sfu", "nodes", "--kind", "relay")
                        assert text.stdout.startswith("relay-us") and "sfu-a" not in text.stdout
                        relay.process.kill()  # SIGKILL: no clean withdrawal
                        gone = await wait_until_async(dropped, 10)
                        print(f"a dead relay left the ICE servers after {gone:.2f} s")
                finally:
                    for s in media:
                        await s.close()
                    for w in watchers:
                        w.stop()

