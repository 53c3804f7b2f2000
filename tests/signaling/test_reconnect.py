"""A flaky network must not lose a ring: resume after reconnect, in order, exactly once."""

from __future__ import annotations

from pathlib import Path

from tests.signaling.harness import cluster


async def test_events_missed_while_offline_arrive_on_resume(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        (alice,) = await c.user("alice@example.com")
        bob_phone, bob_laptop = await c.user("bob@example.com", "phone", "laptop")
        (carol,) = await c.user("carol@example.com")
        first = (await alice.ok("call.invite", handles=["bob@example.com"]))["call_id"]
        await bob_phone.expect("call.incoming")
        seen = bob_phone.last_seq

        await bob_phone.close()  # the network drops
        await alice.ok("call.cancel", call_id=first)
        second = (await carol.ok("call.invite", handles=["bob@example.com"]))["call_id"]
        await bob_laptop.expect("call.incoming", call_id=second)
        c.advance(20)  # within the 60 s grace period

        welcome = await bob_phone.connect(resume=True)
        assert welcome["resumed"] is True and welcome["head"] == seen + 2
        stop = await bob_phone.next_event("call.stop_ringing")
        assert stop["call_id"] == first and stop["seq"] == seen + 1
        ring = await bob_phone.next_event("call.incoming")
        assert ring["call_id"] == second and ring["seq"] == seen + 2
        await bob_phone.no_event(0.3)  # exactly once: nothing replayed twice

        # The ring is still live: the reconnected phone can answer it.
        await bob_phone.ok("call.answer", call_id=second)
        await carol.expect("call.participant", state="joined")


async def test_fresh_start_gets_the_rings_still_going(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        (alice,) = await c.user("alice@example.com")
        await c.signup("bob@example.com")
        bob = await c.login("bob@example.com", connect=False)
        call_id = (await alice.ok("call.invite", handles=["bob@example.com"]))["call_id"]
        c.advance(10)
        welcome = await bob.connect()  # e.g. woken by a push notification
        assert welcome["resumed"] is False
        ring = await bob.expect("call.incoming")
        assert ring["call_id"] == call_id
        assert ring["ring_deadline"] == c.clock.now() + 20


async def test_resume_after_the_grace_period_reports_the_loss(tmp_path: Path) -> None:
    async with cluster(tmp_path, reconnect_grace=5.0) as c:
        (alice,) = await c.user("alice@example.com")
        (bob,) = await c.user("bob@example.com")
        (carol,) = await c.user("carol@example.com")
        first = (await alice.ok("call.invite", handles=["bob@example.com"]))["call_id"]
        await bob.expect("call.incoming")
        await bob.close()
        second = (await carol.ok("call.invite", handles=["bob@example.com"]))["call_id"]
        c.advance(6)  # past the grace period: the mailbox forgot the second ring
        welcome = await bob.connect(resume=True)
        assert welcome["resumed"] is False
        # The device is told to resynchronise, and both calls still ringing ring again.
        rings = {(await bob.expect("call.incoming"))["call_id"] for _ in range(2)}
        assert rings == {first, second}


async def test_a_second_connection_of_a_device_replaces_the_first(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        (alice,) = await c.user("alice@example.com")
        (bob,) = await c.user("bob@example.com")
        from tests.signaling.harness import Device

        twin = Device(bob.base_url, bob.token, bob.device_id, bob.handle)
        c.devices.append(twin)
        await twin.connect()
        assert (await bob.expect("_closed"))["code"] == 4409
        call_id = (await alice.ok("call.invite", handles=["bob@example.com"]))["call_id"]
        assert (await twin.expect("call.incoming"))["call_id"] == call_id
