"""Call links: the owner makes one and opens its call; a guest without an account waits in
the lobby, is admitted (an SFU token for that call only) or refused; revoked, expired and
forged links are refused with a clear code, counted; a guest token opens nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.signaling.harness import Cluster, cluster
from visavis.tokens import verify_token

SFU = "ws://127.0.0.1:9/sfu"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def new_link(c: Cluster, token: str, **body: Any) -> dict[str, Any]:
    r = await c.http.post(f"{c.url}/api/links", json=body, headers=bearer(token))
    assert r.status_code == 201, r.text
    link: dict[str, Any] = r.json()
    return link


async def arrive(c: Cluster, link_token: str, name: str) -> httpx.Response:
    return await c.http.post(f"{c.url}/api/join/{link_token}", json={"display_name": name})


async def rejected(c: Cluster, code: str) -> float:
    r = await c.http.get(f"{c.url}/metrics")
    for line in r.text.splitlines():
        if line.startswith(f'visavis_rejected_messages_total{{reason="{code}"}}'):
            return float(line.split()[-1])
    return 0.0


async def test_guest_waits_is_admitted_into_that_call_only_and_sees_it_end(tmp_path: Path) -> None:
    async with cluster(tmp_path, sfu_url=SFU) as c:
        alice_phone, alice_laptop = await c.user("alice@example.com", "phone", "laptop")
        link = await new_link(c, alice_phone.token)
        assert link["token"] and not link["revoked"] and link["call_id"] is None
        listed = (await c.get(alice_phone, "/api/links")).json()
        assert [x["id"] for x in listed] == [link["id"]] and listed[0]["token"] is None

        # Someone without an account opens it: whose call, then a name, then the lobby.
        info = await c.http.get(f"{c.url}/api/join/{link['token']}")
        assert info.json()["owner"]["display_name"] == "alice"
        r = await arrive(c, link["token"], "Eve")
        assert r.status_code == 201, r.text
        eve = r.json()
        assert eve["guest"] == {"id": eve["guest"]["id"], "display_name": "Eve", "guest": True}
        # No call yet: every device of the owner hears of her.
        for device in (alice_phone, alice_laptop):
            event = await device.expect("call.guest")
            assert event["state"] == "waiting" and event["guest"]["display_name"] == "Eve"
        status = await c.http.get(f"{c.url}/api/guest", headers=bearer(eve["token"]))
        assert status.json()["state"] == "waiting" and status.json()["room"] is None

        # Alice opens the link's call on her laptop: the SFU room, and who waits.
        call_id = (await alice_laptop.ok("call.link_join", link_id=link["id"]))["call_id"]
        await alice_laptop.expect("call.room", call_id=call_id)
        assert (await alice_laptop.expect("call.guest", call_id=call_id))["state"] == "waiting"
        # Her phone cannot open it a second time while the laptop is in it.
        busy = await alice_phone.request("call.link_join", link_id=link["id"])
        assert busy["code"] == "in_call_elsewhere"

        # Only a device in the call admits; the guest then gets a token for this room.
        refused = await alice_phone.request(
            "call.admit", call_id=call_id, guest_id=eve["guest"]["id"]
        )
        assert refused["code"] == "not_in_call"
        await alice_laptop.ok("call.admit", call_id=call_id, guest_id=eve["guest"]["id"])
        assert (await alice_laptop.expect("call.guest"))["state"] == "admitted"
        status = (await c.http.get(f"{c.url}/api/guest", headers=bearer(eve["token"]))).json()
        assert status["state"] == "admitted"
        claims = verify_token("test-secret", status["room"]["token"], now=c.clock.now())
        assert claims["call"] == call_id and claims["user"] == "guest:Eve"
        assert claims["device"] == eve["guest"]["id"]
        again = await alice_laptop.request(
            "call.admit", call_id=call_id, guest_id=eve["guest"]["id"]
        )
        assert again["code"] == "not_waiting"

        # A guest token is nobody's device token: nothing else opens with it.
        for path in ("/api/me", "/api/calls", "/api/devices", "/api/links"):
            r = await c.http.get(f"{c.url}{path}", headers=bearer(eve["token"]))
            assert r.status_code == 401, (path, r.text)
        r = await c.http.post(f"{c.url}/api/calls/{call_id}/room", headers=bearer(eve["token"]))
        assert r.status_code == 401
        # ... nor does the device socket.
        from tests.signaling.harness import Device

        socket = Device(c.url, eve["token"], "x", "guest")
        welcome = await socket.connect()
        assert welcome["type"] == "error" and welcome["code"] == "bad_token"

        # The owner leaves: the call is over, and the guest's lobby says so.
        await alice_laptop.ok("call.leave", call_id=call_id)
        status = (await c.http.get(f"{c.url}/api/guest", headers=bearer(eve["token"]))).json()
        assert status["state"] == "ended" and status["room"] is None

        # The owner's history shows who came in through the link (a refused or still
        # waiting guest is not listed): on every device, and for this call alone.
        refused_guest = (await arrive(c, link["token"], "Mal")).json()
        assert refused_guest["guest"]["display_name"] == "Mal"
        history = (await c.get(alice_phone, "/api/calls")).json()
        entry = next(h for h in history if h["call_id"] == call_id)
        assert entry["guests"] == [eve["guest"]]
        one = (await c.get(alice_phone, f"/api/calls/{call_id}")).json()
        assert one["guests"] == [eve["guest"]]


async def test_refused_revoked_expired_and_forged_links(tmp_path: Path) -> None:
    async with cluster(tmp_path, sfu_url=SFU) as c:
        (alice,) = await c.user("alice@example.com")
        (bob,) = await c.user("bob@example.com")
        link = await new_link(c, alice.token)
        call_id = (await alice.ok("call.link_join", link_id=link["id"]))["call_id"]

        # Refused by the person in the call.
        fay = (await arrive(c, link["token"], "Fay")).json()
        await alice.expect("call.guest", state="waiting")
        await alice.ok("call.refuse", call_id=call_id, guest_id=fay["guest"]["id"])
        assert (await alice.expect("call.guest", state="refused"))["guest"]["display_name"] == "Fay"
        status = (await c.http.get(f"{c.url}/api/guest", headers=bearer(fay["token"]))).json()
        assert status["state"] == "refused" and status["room"] is None
        # Someone else's link: not Bob's to open or revoke.
        assert (await bob.request("call.link_join", link_id=link["id"]))["code"] == "link_not_found"
        r = await c.http.delete(f"{c.url}/api/links/{link['id']}", headers=bearer(bob.token))
        assert r.status_code == 404

        # Revoked: a guest still waiting is refused and told; newcomers get a clear 410.
        gus = (await arrive(c, link["token"], "Gus")).json()
        await alice.expect("call.guest", state="waiting")
        before = await rejected(c, "link_revoked")
        r = await c.http.delete(f"{c.url}/api/links/{link['id']}", headers=bearer(alice.token))
        assert r.status_code == 204
        assert (await alice.expect("call.guest", state="refused"))["guest"]["display_name"] == "Gus"
        r = await arrive(c, link["token"], "Hal")
        assert r.status_code == 410 and r.json()["code"] == "link_revoked", r.text
        assert "turned off" in r.json()["message"]
        r = await c.http.get(f"{c.url}/api/join/{link['token']}")
        assert r.status_code == 410
        assert await rejected(c, "link_revoked") == before + 2
        status = (await c.http.get(f"{c.url}/api/guest", headers=bearer(gus["token"]))).json()
        assert status["state"] == "refused"
        assert (await alice.request("call.link_join", link_id=link["id"]))["code"] == "link_revoked"
        assert (await c.get(alice, "/api/links")).json() == []

        # Expired.
        short = await new_link(c, alice.token, ttl_hours=1)
        c.advance(3601)
        r = await arrive(c, short["token"], "Ivy")
        assert r.status_code == 410 and r.json()["code"] == "link_expired"

        # Forged, and bad input.
        before = await rejected(c, "link_not_found")
        r = await arrive(c, "not-a-real-token", "Joe")
        assert r.status_code == 404 and r.json()["code"] == "link_not_found"
        assert await rejected(c, "link_not_found") == before + 1
        valid = await new_link(c, alice.token)
        for name in ("", "   ", "a/b", "guest:x", "x" * 61):
            r = await arrive(c, valid["token"], name)
            assert r.status_code == 422, (name, r.text)
        r = await c.http.post(
            f"{c.url}/api/links", json={"ttl_hours": 0}, headers=bearer(alice.token)
        )
        assert r.status_code == 422
        r = await c.http.get(f"{c.url}/api/guest", headers=bearer("forged"))
        assert r.status_code == 401 and r.json()["code"] == "bad_token"
