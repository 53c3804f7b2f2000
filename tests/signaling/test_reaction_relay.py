"""Signaling's part in reactions (docs/effects.md): it relays a sealed reaction, as it is,
to everyone else in the call only (devices, and a call link's admitted guests through
their REST mailbox), refuses outsiders and malformed payloads, and limits how many a
device or a guest may send."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from tests.signaling.harness import cluster
from tests.signaling.test_links import arrive, bearer, new_link, rejected

SFU = "ws://127.0.0.1:9/sfu"
SEALED = "VgF2ZXJ5LXNlYWxlZC1ieXRlcw"  # base64url, as a browser sends it (opaque here)


async def test_reactions_relayed_within_the_call_and_limited(tmp_path: Path) -> None:
    async with cluster(tmp_path, sfu_url=SFU) as c:
        (alice,) = await c.user("alice@example.com")
        (bob,) = await c.user("bob@example.com")
        (carol,) = await c.user("carol@example.com")
        (eve,) = await c.user("eve@example.com")
        handles = ["bob@example.com", "carol@example.com"]
        call_id = (await alice.ok("call.invite", handles=handles))["call_id"]
        for device in (bob, carol):
            await device.expect("call.incoming")
            await device.ok("call.answer", call_id=call_id)

        await alice.ok("call.reaction", call_id=call_id, payload=SEALED)
        for device in (bob, carol):
            got = await device.expect("call.reaction")
            assert (got["payload"], got["from_user"], got["from_device"]) == (
                SEALED,
                "alice@example.com",
                alice.device_id,
            )

        outsider = await eve.request("call.reaction", call_id=call_id, payload=SEALED)
        assert outsider["code"] == "not_in_call"
        for bad in ("x" * 600, "not base64!", ""):
            refused = await alice.request("call.reaction", call_id=call_id, payload=bad)
            assert refused["code"] == "invalid_message", bad

        # A burst of 5 per device, then one per 0.75 s.
        for _ in range(5):
            await bob.ok("call.reaction", call_id=call_id, payload=SEALED)
        limited = await bob.request("call.reaction", call_id=call_id, payload=SEALED)
        assert limited["code"] == "reaction_rate_limited"
        await alice.ok("call.reaction", call_id=call_id, payload=SEALED)  # per device
        c.advance(0.8)
        await bob.ok("call.reaction", call_id=call_id, payload=SEALED)
        for _ in range(6):  # bob's 6 relayed reactions reach alice; her own never do
            got = await alice.expect("call.reaction")
            assert got["from_device"] == bob.device_id
        await eve.no_event(0.1)
        assert not [e for e in alice.drain() if e["type"] == "call.reaction"]


async def test_guests_send_and_receive_reactions_of_their_own_call_only(tmp_path: Path) -> None:
    """A call link's guest has no device socket: it sends with POST /api/guest/reaction and
    finds everyone else's in its mailbox (GET /api/guest/e2ee), only while admitted, only
    for its own call, under the same rate limit as a device."""
    async with cluster(tmp_path, sfu_url=SFU) as c:
        (alice,) = await c.user("alice@example.com")
        (bob,) = await c.user("bob@example.com")
        (carol,) = await c.user("carol@example.com")
        link = await new_link(c, alice.token)
        gus = (await arrive(c, link["token"], "Gus")).json()
        hal = (await arrive(c, link["token"], "Hal")).json()
        gus_id, gus_auth = gus["guest"]["id"], bearer(gus["token"])
        hal_id, hal_auth = hal["guest"]["id"], bearer(hal["token"])
        send, mailbox = f"{c.url}/api/guest/reaction", f"{c.url}/api/guest/e2ee"

        async def read(auth: dict[str, str], after: int = 0) -> tuple[list[dict[str, Any]], int]:
            r = await c.http.get(f"{mailbox}?after={after}", headers=auth)
            assert r.status_code == 200, r.text
            out = r.json()
            return [e for e in out["events"] if e["type"] == "call.reaction"], out["last"]

        # In the lobby: nothing either way.
        call_id = (await alice.ok("call.link_join", link_id=link["id"]))["call_id"]

        async def react(auth: dict[str, str], call: str = call_id) -> httpx.Response:
            return await c.http.post(send, json={"call_id": call, "payload": SEALED}, headers=auth)

        early = await react(gus_auth)
        assert (early.status_code, early.json()["code"]) == (403, "not_in_call")
        await alice.ok("call.reaction", call_id=call_id, payload=SEALED)
        await alice.ok("call.admit", call_id=call_id, guest_id=gus_id)
        await alice.ok("call.admit", call_id=call_id, guest_id=hal_id)
        assert (await read(gus_auth))[0] == []  # not sent to guests still in the lobby

        # A member's reaction reaches both guests' mailboxes, as it is.
        await alice.ok("call.reaction", call_id=call_id, payload=SEALED)
        for auth in (gus_auth, hal_auth):
            got, _ = await read(auth)
            assert [(e["payload"], e["from_user"], e["from_device"]) for e in got] == [
                (SEALED, "alice@example.com", alice.device_id)
            ]
        # A guest's reaches the member's socket and the other guest, never itself.
        _, gus_after = await read(gus_auth)
        _, hal_after = await read(hal_auth)
        ok = await react(gus_auth)
        assert ok.status_code == 204, ok.text
        got = await alice.expect("call.reaction")
        assert (got["payload"], got["from_user"], got["from_device"]) == (
            SEALED,
            "guest:Gus",
            gus_id,
        )
        assert [e["from_device"] for e in (await read(hal_auth, hal_after))[0]] == [gus_id]
        assert (await read(gus_auth, gus_after))[0] == []

        # Not to another call: Bob and Carol's call never hears of it.
        other = (await bob.ok("call.invite", handles=["carol@example.com"]))["call_id"]
        await carol.expect("call.incoming")
        await carol.ok("call.answer", call_id=other)
        before = await rejected(c, "not_in_call")
        wrong = await react(gus_auth, other)
        assert (wrong.status_code, wrong.json()["code"]) == (403, "not_in_call")
        assert await rejected(c, "not_in_call") == before + 1
        # Bad payloads, and a device token instead of a guest's.
        for bad in ("x" * 600, "not base64!", ""):
            r = await c.http.post(send, json={"call_id": call_id, "payload": bad}, headers=gus_auth)
            assert r.status_code == 422, bad
        device = await react(bearer(alice.token))
        assert device.status_code == 401

        # The same limit as a device (5 at once, then one per 0.75 s), per guest: Gus has
        # one left, then he is refused with Retry-After; Hal is not.
        for _ in range(4):
            r = await react(gus_auth)
            assert r.status_code == 204
        before = await rejected(c, "reaction_rate_limited")
        limited = await react(gus_auth)
        assert (limited.status_code, limited.json()["code"]) == (429, "reaction_rate_limited")
        assert limited.headers["retry-after"] == "1"
        assert await rejected(c, "reaction_rate_limited") == before + 1
        r = await react(hal_auth)
        assert r.status_code == 204
        c.advance(0.8)
        r = await react(gus_auth)
        assert r.status_code == 204
        relayed = [await alice.expect("call.reaction") for _ in range(6)]
        assert [e["from_device"] for e in relayed] == [gus_id] * 4 + [hal_id, gus_id]

        # Gone: a guest who left sends nothing more, and gets nothing more.
        assert (await c.http.delete(f"{c.url}/api/guest", headers=gus_auth)).status_code == 204
        late = await react(gus_auth)
        assert (late.status_code, late.json()["code"]) == (403, "not_in_call")
        await asyncio.sleep(0.2)  # time for a stray relay to arrive: there must be none
        assert not [e for d in (bob, carol) for e in d.drain() if e["type"] == "call.reaction"]
