"""Group calls: ringing many users, joining the SFU room, declines, adds, ring again."""

from __future__ import annotations

from pathlib import Path

from tests.signaling.harness import cluster
from visavis.tokens import verify_token

SFU = "ws://127.0.0.1:9/sfu"


async def test_group_call_rings_everyone_and_hands_out_room_tokens(tmp_path: Path) -> None:
    async with cluster(tmp_path, sfu_url=SFU) as c:
        (alice,) = await c.user("alice@example.com")
        bob_phone, bob_laptop = await c.user("bob@example.com", "phone", "laptop")
        (carol,) = await c.user("carol@example.com")
        (dave,) = await c.user("dave@example.com")

        call_id = (
            await alice.ok(
                "call.invite", handles=["bob@example.com", "carol@example.com", "dave@example.com"]
            )
        )["call_id"]
        room = await alice.expect("call.room")
        assert room["url"] == SFU
        claims = verify_token("test-secret", room["token"], now=c.clock.now())
        assert claims["room"] == room["room_id"] and claims["device"] == alice.device_id
        assert claims["user"] == "alice@example.com"

        for device in (bob_phone, bob_laptop, carol, dave):
            ring = await device.expect("call.incoming")
            assert ring["group"] is True and ring["call_id"] == call_id
            assert {p["user"]["handle"] for p in ring["participants"]} == {
                "alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com"
            }

        await bob_laptop.ok("call.answer", call_id=call_id)
        bob_room = await bob_laptop.expect("call.room")
        assert bob_room["room_id"] == room["room_id"]
        assert verify_token("test-secret", bob_room["token"], now=c.clock.now())["device"] == (
            bob_laptop.device_id
        )
        assert (await bob_phone.expect("call.stop_ringing"))["reason"] == "answered_elsewhere"

        # In a group call a decline only takes that person out.
        await carol.ok("call.decline", call_id=call_id)
        assert (await alice.expect("call.participant", state="declined"))["user"]["handle"] == (
            "carol@example.com"
        )
        await alice.no_event(0.2)

        # Group media goes through the SFU, never as peer-to-peer signaling.
        refused = await alice.request(
            "call.signal", call_id=call_id, description={"type": "offer", "sdp": "v=0"}
        )
        assert refused["code"] == "use_sfu"

        # Dave never answers: missed, and the call goes on.
        c.advance(31)
        assert (await dave.expect("call.stop_ringing"))["reason"] == "timeout"
        await alice.expect("call.participant", state="missed")

        # Ring dave again; this time he joins.
        await alice.ok("call.ring_again", call_id=call_id, handle="dave@example.com")
        await dave.expect("call.incoming", call_id=call_id)
        await dave.ok("call.answer", call_id=call_id)
        await dave.expect("call.room")

        # A device in the call can renew its short-lived SFU token; others cannot get one.
        c.advance(300)
        renewed = await c.http.post(
            f"{c.url}/api/calls/{call_id}/room",
            headers={"Authorization": f"Bearer {bob_laptop.token}"},
        )
        assert renewed.status_code == 200
        claims = verify_token("test-secret", renewed.json()["token"], now=c.clock.now())
        assert claims["device"] == bob_laptop.device_id
        for outsider in (bob_phone, carol):
            refused = await c.http.post(
                f"{c.url}/api/calls/{call_id}/room",
                headers={"Authorization": f"Bearer {outsider.token}"},
            )
            assert refused.status_code == 403 and refused.json()["code"] == "not_in_call"

        # Alice leaves; bob and dave go on.
        await alice.ok("call.leave", call_id=call_id)
        await bob_laptop.expect("call.participant", state="left")
        await bob_laptop.no_event(0.2)
        await dave.ok("call.leave", call_id=call_id)
        assert (await bob_laptop.expect("call.ended"))["reason"] == "hangup"

        carol_history = (await c.get(carol, "/api/calls")).json()[0]
        assert carol_history["state"] == "declined" and carol_history["direction"] == "incoming"
        dave_history = (await c.get(dave, "/api/calls")).json()[0]
        assert dave_history["state"] == "answered"


async def test_adding_a_third_person_moves_the_call_to_the_sfu(tmp_path: Path) -> None:
    async with cluster(tmp_path, sfu_url=SFU) as c:
        (alice,) = await c.user("alice@example.com")
        (bob,) = await c.user("bob@example.com")
        (carol,) = await c.user("carol@example.com")
        call_id = (await alice.ok("call.invite", handles=["bob@example.com"]))["call_id"]
        await bob.expect("call.incoming")
        await bob.ok("call.answer", call_id=call_id)
        await alice.expect("call.participant", state="joined")

        outsider = await carol.request("call.add", call_id=call_id, handles=["carol@example.com"])
        assert outsider["code"] == "not_in_call"

        await bob.ok("call.add", call_id=call_id, handles=["carol@example.com"])
        for device in (alice, bob):
            assert (await device.expect("call.room"))["room_id"]
        ring = await carol.expect("call.incoming")
        assert ring["group"] is True
        await carol.ok("call.answer", call_id=call_id)
        await carol.expect("call.room")


async def test_participant_limit(tmp_path: Path) -> None:
    async with cluster(tmp_path, sfu_url=SFU, max_participants=3) as c:
        (alice,) = await c.user("alice@example.com")
        for name in ("bob", "carol", "dave"):
            await c.signup(f"{name}@example.com")
        too_many = await alice.request(
            "call.invite", handles=["bob@example.com", "carol@example.com", "dave@example.com"]
        )
        assert too_many["code"] == "too_many_participants"
        ok = await alice.ok("call.invite", handles=["bob@example.com", "carol@example.com"])
        more = await alice.request("call.add", call_id=ok["call_id"], handles=["dave@example.com"])
        assert more["code"] == "too_many_participants"
