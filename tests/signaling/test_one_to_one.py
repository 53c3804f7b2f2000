"""1:1 calls end to end: real WebSocket devices against a running signaling server."""

from __future__ import annotations

from pathlib import Path

from tests.signaling.harness import cluster


async def test_every_device_rings_and_first_answer_wins(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        (alice,) = await c.user("alice@example.com", "laptop")
        bob_phone, bob_tablet, bob_tv = await c.user("bob@example.com", "phone", "tablet", "tv")

        result = await alice.ok("call.invite", handles=["Bob@Example.com"], media="video")
        call_id = result["call_id"]
        for device in (bob_phone, bob_tablet, bob_tv):
            ring = await device.expect("call.incoming")
            assert ring["call_id"] == call_id
            assert ring["caller"]["handle"] == "alice@example.com"
            assert ring["media"] == "video" and ring["group"] is False
            assert ring["call_waiting"] is False
        ringing = await alice.expect("call.ringing")
        assert ringing["user"]["handle"] == "bob@example.com" and ringing["devices"] == 3

        await bob_tablet.ok("call.answer", call_id=call_id)
        joined = await alice.expect("call.participant", state="joined")
        assert joined["device_id"] == bob_tablet.device_id
        for other in (bob_phone, bob_tv):
            stop = await other.expect("call.stop_ringing")
            assert stop["reason"] == "answered_elsewhere"
            assert stop["device_id"] == bob_tablet.device_id
            late = await other.request("call.answer", call_id=call_id)
            assert late["type"] == "error" and late["code"] == "answered_elsewhere"


async def test_sdp_and_candidates_reach_only_the_answering_device(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        alice_laptop, alice_phone = await c.user("alice@example.com", "laptop", "phone")
        bob_phone, bob_tablet = await c.user("bob@example.com", "phone", "tablet")
        call_id = (await alice_laptop.ok("call.invite", handles=["bob@example.com"]))["call_id"]

        early = await alice_laptop.request(
            "call.signal", call_id=call_id, description={"type": "offer", "sdp": "v=0\r\n"}
        )
        assert early["code"] == "no_peer"

        await bob_phone.expect("call.incoming")
        await bob_phone.ok("call.answer", call_id=call_id)
        await alice_laptop.expect("call.participant", state="joined")
        offer = {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"}
        await alice_laptop.ok("call.signal", call_id=call_id, description=offer)
        got = await bob_phone.expect("call.signal")
        assert got["description"] == offer
        assert got["from_device"] == alice_laptop.device_id
        cand = {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
                "sdpMid": "0", "sdpMLineIndex": 0}
        await bob_phone.ok("call.signal", call_id=call_id, candidate=cand)
        got = await alice_laptop.expect("call.signal")
        assert got["candidate"]["candidate"] == cand["candidate"]

        # The other devices of both users never see the call's media signaling.
        for bystander in (alice_phone, bob_tablet):
            events = bystander.drain()
            assert all(e["type"] != "call.signal" for e in events), events

        # A device not in the call cannot inject signaling into it.
        intruder = await bob_tablet.request("call.signal", call_id=call_id, description=offer)
        assert intruder["type"] == "error" and intruder["code"] == "not_in_call"


async def test_ring_timeout_records_missed_call(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        (alice,) = await c.user("alice@example.com")
        bob_phone, bob_laptop = await c.user("bob@example.com", "phone", "laptop")
        call_id = (await alice.ok("call.invite", handles=["bob@example.com"]))["call_id"]
        await bob_phone.expect("call.incoming")
        await bob_laptop.expect("call.incoming")

        c.advance(29)
        await bob_phone.no_event(0.3)
        c.advance(1.5)
        for device in (bob_phone, bob_laptop):
            stop = await device.expect("call.stop_ringing")
            assert stop["reason"] == "timeout"
        assert (await alice.expect("call.participant"))["state"] == "missed"
        assert (await alice.expect("call.ended"))["reason"] == "no_answer"
        late = await bob_phone.request("call.answer", call_id=call_id)
        assert late["code"] == "call_ended"

        bob_history = (await c.get(bob_phone, "/api/calls")).json()
        assert bob_history[0]["call_id"] == call_id
        assert bob_history[0]["direction"] == "incoming" and bob_history[0]["state"] == "missed"
        alice_history = (await c.get(alice, "/api/calls")).json()
        assert alice_history[0]["direction"] == "outgoing"
        assert alice_history[0]["state"] == "missed" and alice_history[0]["duration"] == 0


async def test_configurable_ring_timeout(tmp_path: Path) -> None:
    async with cluster(tmp_path, ring_timeout=5.0) as c:
        (alice,) = await c.user("alice@example.com")
        (bob,) = await c.user("bob@example.com")
        await alice.ok("call.invite", handles=["bob@example.com"])
        await bob.expect("call.incoming")
        c.advance(5.5)
        assert (await bob.expect("call.stop_ringing"))["reason"] == "timeout"


async def test_decline_one_to_one_tells_the_caller(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        (alice,) = await c.user("alice@example.com")
        bob_phone, bob_tablet = await c.user("bob@example.com", "phone", "tablet")
        call_id = (await alice.ok("call.invite", handles=["bob@example.com"]))["call_id"]
        await bob_phone.expect("call.incoming")
        await bob_phone.ok("call.decline", call_id=call_id)
        assert (await bob_tablet.expect("call.stop_ringing"))["reason"] == "declined_elsewhere"
        assert (await alice.expect("call.participant"))["state"] == "declined"
        assert (await alice.expect("call.ended"))["reason"] == "declined"
        history = (await c.get(alice, "/api/calls")).json()
        assert history[0]["state"] == "declined"
        assert (await c.get(bob_tablet, "/api/calls")).json()[0]["state"] == "declined"


async def test_cancel_before_answer(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        (alice,) = await c.user("alice@example.com")
        bob_phone, bob_tablet = await c.user("bob@example.com", "phone", "tablet")
        call_id = (await alice.ok("call.invite", handles=["bob@example.com"]))["call_id"]
        await bob_phone.expect("call.incoming")

        forbidden = await bob_phone.request("call.cancel", call_id=call_id)
        assert forbidden["code"] == "not_caller"

        await alice.ok("call.cancel", call_id=call_id)
        for device in (bob_phone, bob_tablet):
            assert (await device.expect("call.stop_ringing"))["reason"] == "cancelled"
        assert (await alice.expect("call.ended"))["reason"] == "cancelled"
        assert (await c.get(alice, "/api/calls")).json()[0]["state"] == "cancelled"
        assert (await c.get(bob_phone, "/api/calls")).json()[0]["state"] == "missed"


async def test_hang_up_ends_one_to_one_and_history_has_duration(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        (alice,) = await c.user("alice@example.com")
        (bob,) = await c.user("bob@example.com")
        call_id = (await alice.ok("call.invite", handles=["bob@example.com"]))["call_id"]
        await bob.expect("call.incoming")
        c.advance(2)
        await bob.ok("call.answer", call_id=call_id)
        c.advance(65)
        stranger = await alice.request("call.leave", call_id="nope")
        assert stranger["code"] == "call_not_found"
        await bob.ok("call.leave", call_id=call_id)
        assert (await alice.expect("call.participant", state="left"))["user"]["handle"] == (
            "bob@example.com"
        )
        assert (await alice.expect("call.ended"))["reason"] == "hangup"
        for device in (alice, bob):
            entry = (await c.get(device, "/api/calls")).json()[0]
            assert entry["state"] == "answered"
            assert entry["duration"] == 65


async def test_call_waiting_and_end_and_answer(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        (alice,) = await c.user("alice@example.com")
        (bob,) = await c.user("bob@example.com")
        (carol,) = await c.user("carol@example.com")
        first = (await alice.ok("call.invite", handles=["bob@example.com"]))["call_id"]
        await bob.expect("call.incoming")
        await bob.ok("call.answer", call_id=first)

        second = (await carol.ok("call.invite", handles=["bob@example.com"]))["call_id"]
        ring = await bob.expect("call.incoming", call_id=second)
        assert ring["call_waiting"] is True

        await bob.ok("call.answer", call_id=second, end_current=True)
        assert (await bob.expect("call.ended", call_id=first))["reason"] == "left"
        assert (await alice.expect("call.ended", call_id=first))["reason"] == "hangup"
        assert (await carol.expect("call.participant", state="joined"))["call_id"] == second


async def test_handoff_moves_the_call_to_another_device(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        (alice,) = await c.user("alice@example.com")
        bob_phone, bob_laptop = await c.user("bob@example.com", "phone", "laptop")
        call_id = (await alice.ok("call.invite", handles=["bob@example.com"]))["call_id"]
        await bob_phone.expect("call.incoming")
        await bob_phone.ok("call.answer", call_id=call_id)
        await alice.expect("call.participant", state="joined")

        await bob_laptop.ok("call.handoff", call_id=call_id)
        assert (await bob_phone.expect("call.ended"))["reason"] == "handoff"
        moved = await alice.expect("call.participant", state="handoff")
        assert moved["device_id"] == bob_laptop.device_id
        # Media signaling now flows between alice and the laptop only.
        offer = {"type": "offer", "sdp": "v=0\r\n"}
        await bob_laptop.ok("call.signal", call_id=call_id, description=offer)
        assert (await alice.expect("call.signal"))["from_device"] == bob_laptop.device_id
        gone = await bob_phone.request("call.signal", call_id=call_id, description=offer)
        assert gone["code"] == "not_in_call"
