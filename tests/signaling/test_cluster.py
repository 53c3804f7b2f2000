"""Several signaling nodes on PostgreSQL and Redis behave as one; state survives restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.services import REDIS_URL, fresh_postgres, fresh_redis_prefix
from tests.signaling.harness import cluster
from visavis.bus.redis import RedisBus
from visavis.clock import ManualClock
from visavis.store.sql import SqlStore

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


async def test_devices_on_different_nodes_ring_and_talk(tmp_path: Path) -> None:
    async with fresh_postgres() as db, fresh_redis_prefix() as prefix, cluster(
        tmp_path,
        nodes=2,
        store_factory=lambda: SqlStore(db),
        bus_factory=lambda: RedisBus(REDIS_URL, prefix=prefix),
    ) as c:
        await c.signup("alice@example.com")
        await c.signup("bob@example.com")
        alice = await c.login("alice@example.com", "laptop", node=0)
        bob_phone = await c.login("bob@example.com", "phone", node=1)
        bob_tablet = await c.login("bob@example.com", "tablet", node=0)

        call_id = (await alice.ok("call.invite", handles=["bob@example.com"]))["call_id"]
        assert (await bob_phone.expect("call.incoming"))["call_id"] == call_id
        assert (await bob_tablet.expect("call.incoming"))["call_id"] == call_id

        # Both of bob's devices answer at the same moment on two nodes: one wins.
        first, second = await asyncio.gather(
            bob_phone.request("call.answer", call_id=call_id),
            bob_tablet.request("call.answer", call_id=call_id),
        )
        assert sorted([first["type"], second["type"]]) == ["error", "result"]
        winner, loser = (
            (bob_phone, bob_tablet) if first["type"] == "result" else (bob_tablet, bob_phone)
        )
        joined = await alice.expect("call.participant", state="joined")
        assert joined["device_id"] == winner.device_id
        stop = await loser.expect("call.stop_ringing")
        assert stop["reason"] == "answered_elsewhere"

        offer = {"type": "offer", "sdp": "v=0\r\n"}
        await alice.ok("call.signal", call_id=call_id, description=offer)
        assert (await winner.expect("call.signal"))["description"] == offer

        # Presence is cluster-wide.
        devices = (await c.get(bob_phone, "/api/devices")).json()
        assert all(d["online"] for d in devices)


async def test_a_ring_survives_a_server_restart_on_postgres(tmp_path: Path) -> None:
    clock = ManualClock()
    async with fresh_postgres() as db, fresh_redis_prefix() as prefix:
        def store() -> SqlStore:
            return SqlStore(db)

        def bus() -> RedisBus:
            return RedisBus(REDIS_URL, prefix=prefix)

        async with cluster(tmp_path, store_factory=store, bus_factory=bus, clock=clock) as c:
            (alice,) = await c.user("alice@example.com")
            (bob,) = await c.user("bob@example.com")
            call_id = (await alice.ok("call.invite", handles=["bob@example.com"]))["call_id"]
            await bob.expect("call.incoming")
            tokens = alice.token, bob.token
        # Every server process is gone. A new one starts on the same database.
        async with cluster(tmp_path, store_factory=store, bus_factory=bus, clock=clock) as c:
            from tests.signaling.harness import Device

            alice = Device(c.url, tokens[0], "", "alice@example.com")
            bob = Device(c.url, tokens[1], "", "bob@example.com")
            c.devices += [alice, bob]
            await alice.connect()
            await bob.connect()
            ring = await bob.expect("call.incoming")  # still ringing after the restart
            assert ring["call_id"] == call_id
            # ...and still times out on schedule, swept by the new process.
            clock.advance(31)
            assert (await bob.expect("call.stop_ringing"))["reason"] == "timeout"
            assert (await alice.expect("call.ended"))["reason"] == "no_answer"
            history = (await c.get(bob, "/api/calls")).json()
            assert history[0]["call_id"] == call_id and history[0]["state"] == "missed"
