"""The registry on real Redis: heartbeats with a TTL, signed records (forged and replayed
ones refused and counted), placement that agrees across signaling nodes, failover and
draining moves, full nodes, and the SFU refusing a token for a room on another node."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from websockets.asyncio.client import connect

from tests.services import REDIS_URL, fresh_redis_prefix
from visavis.config import Settings
from visavis.fleet.agent import FleetAgent, Load
from visavis.fleet.metrics import FleetMetrics
from visavis.fleet.record import sign_record
from visavis.fleet.registry import RedisRegistry
from visavis.fleet.service import Assignment, MoveReason, NoMediaNode, RegistryFleet
from visavis.sfu.server import SfuServer
from visavis.tokens import sign_token

pytestmark = [pytest.mark.redis]
SECRET = "registry-test-secret"
JOINED = ("dev1", "dev2", "dev3")  # a call's joined devices: two reports make a quorum


def settings(tmp_path: Path, prefix: str, node_id: str, **fleet: object) -> Settings:
    return Settings(
        data_dir=tmp_path,
        bus_url=REDIS_URL,
        redis_prefix=prefix,
        shared_secret=SECRET,
        node_id=node_id,
        # Every agent here measures this one test process's CPU: place by rooms only.
        fleet={
            "heartbeat_interval": 0.2,
            "ttl": 0.8,
            "check_interval": 0.1,
            "cpu_limit": 1000.0,
            **fleet,
        },
    )


@asynccontextmanager
async def redis_fleet(
    tmp_path: Path, nodes: list[str], **fleet: object
) -> AsyncIterator[tuple[RegistryFleet, dict[str, FleetAgent], list[tuple[Assignment, str]]]]:
    async with fresh_redis_prefix() as prefix:
        client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=10)
        agents = {
            n: FleetAgent(
                settings(tmp_path, prefix, n, **fleet),
                "sfu",
                lambda n=n: Load(control_url=f"ws://{n}/sfu"),  # type: ignore[misc]
            )
            for n in nodes
        }
        registry = RedisRegistry(client, prefix, SECRET)
        signaling = RegistryFleet(
            registry,
            settings(tmp_path, prefix, "sig", **fleet).fleet,
            metrics=FleetMetrics(CollectorRegistry()),
        )
        moves: list[tuple[Assignment, str]] = []

        async def on_moved(a: Assignment, reason: MoveReason) -> None:
            moves.append((a, reason))

        try:
            for agent in agents.values():
                await agent.start()
            await signaling.start(on_moved)
            yield signaling, agents, moves
        finally:
            await signaling.close()
            for agent in agents.values():
                await agent.close()
            await client.aclose()


def refused(fleet: RegistryFleet, reason: str) -> float:
    value = fleet.metrics.registry.get_sample_value(
        "visavis_fleet_records_refused_total", {"reason": reason}
    )
    return value or 0.0


async def eventually(predicate: object, limit: float = 10.0) -> float:
    assert callable(predicate)
    start = time.monotonic()
    while not await predicate():
        assert time.monotonic() - start < limit, "condition not reached"
        await asyncio.sleep(0.02)  # polling Redis
    return time.monotonic() - start


async def test_a_silent_node_leaves_and_its_rooms_move(tmp_path: Path) -> None:
    async with redis_fleet(tmp_path, ["a", "b"]) as (fleet, agents, moves):
        rooms = [await fleet.assign(f"room{i}") for i in range(4)]
        assert sorted(r.node_id or "" for r in rooms) == ["a", "a", "b", "b"]  # by load
        assert (await fleet.assign("room0")) == rooms[0]  # sticky
        # Node a stops heartbeating (as after SIGKILL: no clean withdrawal).
        assert agents["a"]._task is not None
        agents["a"]._task.cancel()
        stopped = time.monotonic()

        async def moved() -> bool:
            return len(moves) == 2

        await eventually(moved)
        gone_after = time.monotonic() - stopped
        assert gone_after < 0.8 + 0.1 + 1.0  # ttl + check interval + scheduling slack
        assert {a.node_id for a, _ in moves} == {"b"}
        assert {reason for _, reason in moves} == {"failover"}
        assert {a.room_id for a, _ in moves} == {r.room_id for r in rooms if r.node_id == "a"}
        assert await fleet.registry.rooms_on("a") == []
        await fleet.release("room0")
        assert await fleet.registry.room_node("room0") is None


async def test_forged_and_replayed_records_are_refused_and_counted(tmp_path: Path) -> None:
    # Slow heartbeats and checks: this test makes the node's beats and signaling's reads
    # itself, so none races its writes; every step is bounded (it hung twice in loaded
    # batches: a Redis reply that never came is now an error, and the whole is capped).
    async with (
        asyncio.timeout(90),
        redis_fleet(tmp_path, ["a"], heartbeat_interval=30, ttl=60, check_interval=30) as (
            fleet,
            agents,
            _,
        ),
    ):
        registry, agent = fleet.registry, agents["a"]
        old = await registry.raw_record("sfu", "a")
        assert old is not None
        await fleet.refresh()  # accepts the current record
        await agent.beat()
        assert (await fleet.refresh()).node("a") is not None  # accepts the newer one
        await registry.put_raw("sfu", "a", old, ttl=30)  # an attacker replays the old one
        view = await fleet.refresh()
        assert view.node("a") is None and ("a", "replayed") in view.refused
        # Forged: a record for a node that does not exist, signed with the wrong key.
        fake = agent.record().with_load(node_id="evil", control_url="ws://evil/sfu")
        await registry.put_raw("sfu", "evil", sign_record("not-the-secret", fake, ttl=30), ttl=30)
        # ...and a genuine record copied under another node's key.
        await registry.put_raw("sfu", "copy", sign_record(SECRET, agent.record(), ttl=30), ttl=30)
        for _ in range(3):  # counted once however often it is read
            view = await fleet.refresh()
        assert view.nodes == []
        assert refused(fleet, "replayed") == 1 and refused(fleet, "forged") == 2
        with pytest.raises(NoMediaNode):
            await fleet.assign("r1")
        # The real node's next heartbeat overwrites the replayed record: it is back.
        await agent.beat()
        assert (await fleet.refresh()).node("a") is not None
        assert (await fleet.assign("r1")).node_id == "a"


async def test_a_draining_node_takes_no_rooms_and_its_rooms_move(tmp_path: Path) -> None:
    async with redis_fleet(tmp_path, ["a", "b"]) as (fleet, agents, moves):
        first = await fleet.assign("r1")
        agents[first.node_id or ""].drain()
        other = "b" if first.node_id == "a" else "a"

        async def moved() -> bool:
            return len(moves) == 1

        await eventually(moved)
        assert moves[0][0].node_id == other and moves[0][1] == "drain"
        for i in range(3):
            assert (await fleet.assign(f"new{i}")).node_id == other


async def test_full_nodes_take_no_new_rooms(tmp_path: Path) -> None:
    async with redis_fleet(tmp_path, ["a", "b"], capacity=6) as (fleet, _, _):
        placed = [await fleet.assign(f"r{i}") for i in range(4)]  # 2 rooms x 4 > 6 each
        assert sorted(p.node_id or "" for p in placed) == ["a", "a", "b", "b"]
        with pytest.raises(NoMediaNode):
            await fleet.assign("r5")
        await fleet.release("r0")
        assert (await fleet.assign("r5")).node_id == placed[0].node_id


async def test_the_sfu_refuses_a_token_for_a_room_on_another_node(tmp_path: Path) -> None:
    config = Settings(
        data_dir=tmp_path,
        shared_secret=SECRET,
        node_id="here",
        sfu={"port": 0, "media_port": 0, "allowed_networks": ["127.0.0.0/8"]},
    )
    server = SfuServer(config)
    await server.start()
    try:
        claims = {"room": "r", "call": "r", "user": "u@example.com", "device": "d"}
        for node, expected in (("elsewhere", "unauthorized"), ("here", "joined")):
            token = sign_token(SECRET, {**claims, "node": node}, now=time.time(), ttl=60)
            async with connect(server.control_url) as ws:
                await ws.send(json.dumps({"type": "join", "token": token}))
                reply = json.loads(await ws.recv())
            assert reply["type"] == ("error" if expected != "joined" else "joined"), reply
            if expected != "joined":
                assert reply["code"] == expected and "another node" in reply["message"]
        assert (
            server.registry.get_sample_value(
                "visavis_sfu_joins_refused_total", {"reason": "wrong_node"}
            )
            == 1
        )
    finally:
        await server.close()


async def test_cascaded_rooms_get_a_leg_per_region_and_when_full(tmp_path: Path) -> None:
    """A room's participants coming through a signaling node of another region join a
    node of that region (a leg) and their token names the room's other nodes; a room
    whose node reports itself full gets a second node; the call's end releases both."""
    async with fresh_redis_prefix() as prefix:
        client = aioredis.Redis.from_url(REDIS_URL)
        people = {"a": 0, "b": 0, "c": 0}
        nodes = {"a": "eu", "b": "us", "c": "eu"}
        agents = [
            FleetAgent(
                settings(tmp_path, prefix, n, region=r, capacity=10),
                "sfu",
                lambda n=n: Load(control_url=f"ws://{n}/sfu", participants=people[n]),  # type: ignore[misc]
            )
            for n, r in nodes.items()
        ]
        registry = RedisRegistry(client, prefix, SECRET)
        fleets = {
            r: RegistryFleet(
                registry,
                settings(tmp_path, prefix, f"sig-{r}", region=r).fleet,
                metrics=FleetMetrics(CollectorRegistry()),
            )
            for r in ("eu", "us")
        }
        try:
            for agent in agents:
                await agent.start()
            eu, us = fleets["eu"], fleets["us"]
            first = await eu.assign("room")
            assert first.node_id in ("a", "c") and first.peers == ()
            leg = await us.assign("room")
            assert (leg.node_id, leg.url, leg.peers) == ("b", "ws://b/sfu", (first.node_id,))
            again = await eu.assign("room")  # eu participants now learn of the leg
            assert (again.node_id, again.peers) == (first.node_id, ("b",))
            assert (await us.assign("room")).node_id == "b"  # sticky
            # The room's node fills up (by its own report): the next eu joiner overflows
            # onto the other eu node, linked to both.
            people[first.node_id or ""] = 10
            for agent in agents:
                await agent.beat()
            await eu.refresh()
            other = "c" if first.node_id == "a" else "a"
            overflow = await eu.assign("room")
            assert (overflow.node_id, overflow.peers) == (
                other,
                tuple(sorted((first.node_id or "", "b"))),
            )
            await eu.release("room")
            assert await registry.room_node("room") is None
            assert await registry.legs("room") == {}
            assert [await registry.rooms_on(n) for n in nodes] == [[], [], []]
        finally:
            for agent in agents:
                await agent.close()
            await client.aclose()


async def test_relays_register_and_devices_get_healthy_ones_near_them(tmp_path: Path) -> None:
    """Relay nodes heartbeat into the registry like SFU nodes; signaling hands out the
    ICE URLs of live relays, its own region's first; a relay that stops is dropped."""
    async with fresh_redis_prefix() as prefix:
        client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=10)
        relays = {
            n: FleetAgent(
                settings(tmp_path, prefix, n, region=r),
                "relay",
                lambda n=n: Load(urls=(f"stun:{n}:3478", f"turn:{n}:3478?transport=udp")),  # type: ignore[misc]
            )
            for n, r in (("r-eu", "eu"), ("r-us", "us"), ("r-us2", "us"))
        }
        signaling = RegistryFleet(
            RedisRegistry(client, prefix, SECRET),
            settings(tmp_path, prefix, "sig-us", region="us").fleet,
            metrics=FleetMetrics(CollectorRegistry()),
        )
        try:
            async with asyncio.timeout(60):
                for agent in relays.values():
                    await agent.start()
                await signaling.check()
                urls = signaling.ice_urls() or []
                hosts = {u.split(":")[1] for u in urls}
                assert hosts == {"r-us", "r-us2"}, urls  # the region's relays, none farther
                await relays["r-us"].close()  # stops: its record goes at once
                await relays["r-us2"].close()
                await signaling.check()
                assert {u.split(":")[1] for u in signaling.ice_urls() or []} == {"r-eu"}
        finally:
            for agent in relays.values():
                await agent.close()
            await client.aclose()


async def test_relays_report_their_load_and_a_full_one_is_passed_over(tmp_path: Path) -> None:
    """A relay's record carries its allocations and packet rate (from its own counters);
    signaling hands devices the relays of their region that have room, not one whose
    packet rate reached its capacity."""
    async with fresh_redis_prefix() as prefix:
        client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=10)
        allocations = {"r-a": 0, "r-b": 5, "r-c": 2}
        rates = {"r-a": 0, "r-b": 0, "r-c": 0}  # packets relayed per second

        def load(n: str) -> Load:
            packets = int(rates[n] * time.monotonic())  # a counter growing at that rate
            return Load(urls=(f"turn:{n}:3478?transport=udp",), allocations=allocations[n],
                        packets=packets)

        relays = {
            n: FleetAgent(
                settings(tmp_path, prefix, n, region="us", relay_capacity=1000),
                "relay",
                lambda n=n: load(n),  # type: ignore[misc]
            )
            for n in allocations
        }
        signaling = RegistryFleet(
            RedisRegistry(client, prefix, SECRET),
            settings(tmp_path, prefix, "sig-us", region="us").fleet,
            metrics=FleetMetrics(CollectorRegistry()),
        )
        try:
            async with asyncio.timeout(60):
                for agent in relays.values():
                    await agent.start()
                await signaling.check()
                hosts = [u.split(":")[1] for u in signaling.ice_urls() or []]
                assert hosts == ["r-a", "r-c"], hosts  # idle; the fewest allocations first
                # r-a relays 10,000 packets/s: over its capacity of 1,000/s.
                rates["r-a"] = 10_000
                await relays["r-a"].beat()
                await relays["r-a"].beat()
                view = await signaling.refresh("relay")
                busy, other = view.node("r-a"), view.node("r-b")
                assert busy is not None and busy.pps > 1000 and busy.capacity == 1000
                assert other is not None and other.allocations == 5 and other.pps == 0
                await signaling.check()
                hosts = [u.split(":")[1] for u in signaling.ice_urls() or []]
                assert hosts == ["r-c", "r-b"], hosts
        finally:
            for agent in relays.values():
                await agent.close()
            await client.aclose()


async def test_participants_reports_move_a_room_before_the_ttl(tmp_path: Path) -> None:
    """Reports of a lost node from enough of a room's participants move the room at once
    (its node's record is still live: ttl 30 s); one report alone does not, and a report
    about a node that is not the room's is refused. Both counted."""
    async with (
        asyncio.timeout(60),
        redis_fleet(tmp_path, ["a", "b"], ttl=30, check_interval=30) as (fleet, _, moves),
    ):
        first = await fleet.assign("room")
        other = "b" if first.node_id == "a" else "a"

        def reports(outcome: str) -> float:
            value = fleet.metrics.registry.get_sample_value(
                "visavis_fleet_media_lost_reports_total", {"outcome": outcome}
            )
            return value or 0.0

        await fleet.report_lost("room", f"ws://{other}/sfu", "dev1", joined=JOINED)
        assert reports("refused") == 1 and moves == []
        await fleet.report_lost("room", first.url, "dev1", joined=JOINED)
        await fleet.report_lost("room", first.url, "dev1", joined=JOINED)  # the same device again
        assert reports("counted") == 2 and moves == []
        started = time.monotonic()
        await fleet.report_lost("room", first.url, "dev2", joined=JOINED)
        assert reports("acted") == 1
        assert [(a.room_id, a.node_id, reason) for a, reason in moves] == [
            ("room", other, "failover")
        ]
        assert time.monotonic() - started < 1.0
        assert (await fleet.assign("room")).node_id == other


async def test_a_node_reported_lost_takes_no_room_while_its_record_lives(tmp_path: Path) -> None:
    """Once participants' reports moved a room off a node, no room goes back to it (not a
    new room, not one moved off a draining node) although its record is still live and
    it is now the least loaded: it died, its record just has not expired yet."""
    async with (
        asyncio.timeout(60),
        redis_fleet(tmp_path, ["a", "b", "c"], ttl=30, check_interval=30) as (fleet, _, moves),
    ):
        lost = await fleet.assign("room")
        await fleet.report_lost("room", lost.url, "dev1", joined=JOINED)
        await fleet.report_lost("room", lost.url, "dev2", joined=JOINED)
        [(moved, _)] = moves
        assert moved.node_id != lost.node_id
        placed = [(await fleet.assign(f"new{i}")).node_id for i in range(4)]
        assert lost.node_id not in placed, placed
        assert await fleet.registry.rooms_on(lost.node_id) == []
        drained = await fleet._move("room", moved.node_id, "drain", notify=False)
        assert drained is not None and drained.node_id not in (lost.node_id, moved.node_id)


async def test_a_legs_failover_concerns_only_the_devices_on_that_leg(tmp_path: Path) -> None:
    """A room on ``a`` (eu) with a leg in us: the leg's devices' reports move the leg
    alone (to the other us node, linked to ``a``); a device of the first node cannot
    report the leg's node, and its binding (what a move is sent to) stays put."""
    async with fresh_redis_prefix() as prefix:
        client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=10)
        nodes = {"a": "eu", "b": "us", "c": "us"}
        agents = [
            FleetAgent(
                settings(tmp_path, prefix, n, region=r, ttl=30, check_interval=30),
                "sfu",
                lambda n=n: Load(control_url=f"ws://{n}/sfu"),  # type: ignore[misc]
            )
            for n, r in nodes.items()
        ]
        registry = RedisRegistry(client, prefix, SECRET)
        moves: list[tuple[Assignment, str]] = []

        async def on_moved(a: Assignment, reason: MoveReason) -> None:
            moves.append((a, reason))

        fleets = {
            r: RegistryFleet(
                registry,
                settings(tmp_path, prefix, f"sig-{r}", region=r, ttl=30).fleet,
                metrics=FleetMetrics(CollectorRegistry()),
            )
            for r in ("eu", "us")
        }
        try:
            async with asyncio.timeout(60):
                for agent in agents:
                    await agent.start()
                eu, us = fleets["eu"], fleets["us"]
                await us.start(on_moved)
                home = await eu.assign("room")
                leg = await us.assign("room")
                assert (home.node_id, home.placement) == ("a", "room")
                assert leg.node_id in ("b", "c") and leg.placement == "room~us"
                for device, where in (("d1", home), ("d2", home), ("d3", leg), ("d4", leg)):
                    await eu.bind("room", device, where.placement)
                joined = ("d1", "d2", "d3", "d4")
                await us.report_lost("room", leg.url, "d1", joined=joined)  # not on the leg
                refused = us.metrics.registry.get_sample_value(
                    "visavis_fleet_media_lost_reports_total", {"outcome": "refused"}
                )
                assert refused == 1
                await us.report_lost("room", leg.url, "d3", joined=joined)
                assert moves == []  # one of the leg's two devices: no quorum yet
                await us.report_lost("room", leg.url, "d4", joined=joined)
                other = "c" if leg.node_id == "b" else "b"
                assert [(a.node_id, a.placement, a.peers, r) for a, r in moves] == [
                    (other, "room~us", ("a",), "failover")
                ]
                assert await registry.room_node("room") == "a"  # the first node stays
                assert await registry.bound("room") == {
                    "d1": "room", "d2": "room", "d3": "room~us", "d4": "room~us"
                }
                await eu.release("room")
                assert await registry.bound("room") == {}
        finally:
            for f in fleets.values():
                await f.close()
            for agent in agents:
                await agent.close()
            await client.aclose()
