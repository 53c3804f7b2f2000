"""Signaling's part in reactions (docs/effects.md): it relays a sealed reaction, as it is,
to the other devices of the call only, refuses outsiders and malformed payloads, and
limits how many a device may send."""

from __future__ import annotations

from pathlib import Path

from tests.signaling.harness import cluster

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
