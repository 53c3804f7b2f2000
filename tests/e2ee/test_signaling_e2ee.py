"""Signaling's part in E2EE: it stores public identity keys once and relays opaque key
messages only between devices of one call (and its admitted call-link guests)."""

from __future__ import annotations

from pathlib import Path

from tests.signaling.harness import cluster
from tests.signaling.test_links import arrive, bearer
from visavis.e2ee.identity import DeviceIdentity


async def test_identity_keys_are_public_halves_set_once(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        (alice,) = await c.user("alice@example.com")
        bob, _laptop = await c.user("bob@example.com", "phone", "laptop")
        key = DeviceIdentity.generate().public_b64
        auth = {"Authorization": f"Bearer {bob.token}"}
        put = f"{c.url}/api/devices/current/identity"
        assert (await c.http.put(put, json={"public_key": key}, headers=auth)).status_code == 204
        assert (await c.http.put(put, json={"public_key": key}, headers=auth)).status_code == 204
        other = DeviceIdentity.generate().public_b64
        refused = await c.http.put(put, json={"public_key": other}, headers=auth)
        assert (refused.status_code, refused.json()["code"]) == (409, "identity_set")
        bad = await c.http.put(put, json={"public_key": "not a key"}, headers=auth)
        assert bad.status_code == 422
        listed = (await c.get(alice, "/api/users/bob@example.com/devices")).json()
        assert listed == [{"device_id": bob.device_id, "name": "phone", "public_key": key}]
        assert (await c.get(alice, "/api/users/nobody@example.com/devices")).status_code == 404


async def test_key_messages_relayed_only_within_a_call(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        (alice,) = await c.user("alice@example.com")
        (bob,) = await c.user("bob@example.com")
        (eve,) = await c.user("eve@example.com")
        call_id = (await alice.ok("call.invite", handles=["bob@example.com"]))["call_id"]
        await bob.expect("call.incoming")
        early = await alice.request("call.e2ee", call_id=call_id, payload="x")
        assert early["type"] == "result"  # nobody else in the call yet: nothing relayed
        await bob.ok("call.answer", call_id=call_id)

        await alice.ok("call.e2ee", call_id=call_id, payload="opaque-1")
        got = await bob.expect("call.e2ee")
        assert (got["payload"], got["from_device"], got["from_user"]) == (
            "opaque-1",
            alice.device_id,
            "alice@example.com",
        )
        await bob.ok("call.e2ee", call_id=call_id, to_device=alice.device_id, payload="opaque-2")
        assert (await alice.expect("call.e2ee"))["payload"] == "opaque-2"

        outsider = await eve.request("call.e2ee", call_id=call_id, payload="forged")
        assert outsider["code"] == "not_in_call"
        wrong = await alice.request(
            "call.e2ee", call_id=call_id, to_device=eve.device_id, payload="leak"
        )
        assert wrong["code"] == "not_in_call"
        big = await alice.request("call.e2ee", call_id=call_id, payload="x" * 5000)
        assert big["code"] == "invalid_message"
        await eve.no_event(0.2)


async def test_guest_key_messages_only_once_admitted_and_only_within_the_call(
    tmp_path: Path,
) -> None:
    """A guest from a call link has no device socket: it sends its key messages with
    POST /api/guest/e2ee and reads those addressed to it with GET (its mailbox)."""
    async with cluster(tmp_path, sfu_url="ws://127.0.0.1:9/sfu") as c:
        (alice,) = await c.user("alice@example.com")
        (eve,) = await c.user("eve@example.com")
        r = await c.http.post(f"{c.url}/api/links", json={}, headers=bearer(alice.token))
        link = r.json()
        gus = (await arrive(c, link["token"], "Gus")).json()
        guest, auth = gus["guest"]["id"], bearer(gus["token"])
        send, read = f"{c.url}/api/guest/e2ee", f"{c.url}/api/guest/e2ee?after=0"
        # In the lobby: no key messages either way.
        waiting = await c.http.post(send, json={"payload": "early"}, headers=auth)
        assert (waiting.status_code, waiting.json()["code"]) == (403, "not_in_call")
        call_id = (await alice.ok("call.link_join", link_id=link["id"]))["call_id"]
        early = await alice.request("call.e2ee", call_id=call_id, to_device=guest, payload="x")
        assert early["code"] == "not_in_call"
        await alice.ok("call.admit", call_id=call_id, guest_id=guest)

        # Admitted: the guest's message reaches the call's devices, as a guest's.
        assert (await c.http.post(send, json={"payload": "g-1"}, headers=auth)).status_code == 204
        got = await alice.expect("call.e2ee")
        assert (got["payload"], got["from_device"], got["from_user"]) == (
            "g-1",
            guest,
            "guest:Gus",
        )
        # A device of the call answers the guest; the guest reads it, once.
        await alice.ok("call.e2ee", call_id=call_id, to_device=guest, payload="a-1")
        out = (await c.http.get(read, headers=auth)).json()
        assert [e["payload"] for e in out["events"]] == ["a-1"]
        assert out["events"][0]["from_device"] == alice.device_id and out["last"] >= 1
        after = (await c.http.get(f"{send}?after={out['last']}", headers=auth)).json()
        assert after["events"] == []
        # Nobody outside the call reaches the guest, nor the guest anyone outside.
        outsider = await eve.request("call.e2ee", call_id=call_id, to_device=guest, payload="z")
        assert outsider["code"] == "not_in_call"
        wrong = await c.http.post(
            send, json={"payload": "leak", "to_device": eve.device_id}, headers=auth
        )
        assert wrong.status_code == 403
        assert (await c.http.get(read, headers=bearer(alice.token))).status_code == 401
        await eve.no_event(0.2)
