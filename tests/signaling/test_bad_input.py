"""Bad input gets a specific error, is counted, and disturbs nobody else."""

from __future__ import annotations

import json
from pathlib import Path

import websockets

from tests.signaling.harness import cluster


def _counter(text: str, reason: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'visavis_rejected_messages_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


async def test_malformed_messages_get_specific_errors(tmp_path: Path) -> None:
    async with cluster(tmp_path, max_message_bytes=1024) as c:
        (alice,) = await c.user("alice@example.com")
        (bob,) = await c.user("bob@example.com")

        async def error_for(raw: str | bytes) -> dict:
            await alice.send_raw(raw)
            event = await alice.next_event()
            assert event["type"] == "error", event
            return event

        assert (await error_for("{nope"))["code"] == "malformed_json"
        assert (await error_for("[1, 2]"))["code"] == "unknown_type"
        assert (await error_for(json.dumps({"type": "call.explode"})))["code"] == "unknown_type"
        wrong = await error_for(json.dumps({"type": "call.invite", "handles": "bob"}))
        assert wrong["code"] == "invalid_message" and "handles" in wrong["message"]
        assert (await error_for(json.dumps({"type": "call.answer"})))["code"] == "invalid_message"
        assert (await error_for(b"\x00\x01"))["code"] == "binary_not_supported"
        big = json.dumps({"type": "ping", "pad": "x" * 2000})
        assert (await error_for(big))["code"] == "message_too_large"
        extra = await error_for(json.dumps({"type": "ping", "evil": True}))
        assert extra["code"] == "invalid_message"
        again = await error_for(json.dumps({"type": "hello", "token": alice.token}))
        assert again["code"] == "already_authenticated"
        bad_handle = await alice.request("call.invite", handles=["not a handle"])
        assert bad_handle["code"] == "invalid_handle"
        nobody = await alice.request("call.invite", handles=["nobody@example.com"])
        assert nobody["code"] == "unknown_user"
        me = await alice.request("call.invite", handles=["alice@example.com"])
        assert me["code"] == "cannot_call_self"
        both = await alice.request("call.signal", call_id="x")
        assert both["code"] == "invalid_signal"

        # The connection survived all of it and still works.
        call_id = (await alice.ok("call.invite", handles=["bob@example.com"]))["call_id"]
        assert (await bob.expect("call.incoming"))["call_id"] == call_id

        metrics = (await c.http.get(f"{c.url}/metrics")).text
        for reason in (
            "malformed_json",
            "unknown_type",
            "invalid_message",
            "message_too_large",
            "binary_not_supported",
            "unknown_user",
            "cannot_call_self",
        ):
            assert _counter(metrics, reason) >= 1, reason


async def test_flood_is_rate_limited_without_hurting_others(tmp_path: Path) -> None:
    async with cluster(tmp_path, rate_limit_burst=20, rate_limit_per_second=1.0) as c:
        (mallory,) = await c.user("mallory@example.com")
        (alice,) = await c.user("alice@example.com")
        (bob,) = await c.user("bob@example.com")
        for _ in range(40):
            await mallory.send_raw(json.dumps({"type": "ping"}))
        answers = [await mallory.next_event() for _ in range(40)]
        limited = [a for a in answers if a.get("code") == "rate_limited"]
        assert len(limited) == 20
        # Time refills the bucket.
        c.advance(5)
        assert (await mallory.request("ping"))["type"] == "pong"
        # Others are unaffected.
        call_id = (await alice.ok("call.invite", handles=["bob@example.com"]))["call_id"]
        assert (await bob.expect("call.incoming"))["call_id"] == call_id


async def test_forbidden_actions(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        (alice,) = await c.user("alice@example.com")
        (bob,) = await c.user("bob@example.com")
        (eve,) = await c.user("eve@example.com")
        call_id = (await alice.ok("call.invite", handles=["bob@example.com"]))["call_id"]
        await bob.expect("call.incoming")

        assert (await eve.request("call.answer", call_id=call_id))["code"] == "not_invited"
        assert (await eve.request("call.decline", call_id=call_id))["code"] == "not_invited"
        assert (await eve.request("call.cancel", call_id=call_id))["code"] == "not_caller"
        assert (await eve.request("call.leave", call_id=call_id))["code"] == "not_invited"
        assert (await eve.request("call.handoff", call_id=call_id))["code"] == "not_in_call"
        add = await eve.request("call.add", call_id=call_id, handles=["eve@example.com"])
        assert add["code"] == "not_in_call"
        # Bob may not end alice's side of the call before answering.
        assert (await bob.request("call.leave", call_id=call_id))["code"] == "not_in_call"
        # Nothing of that reached the call: bob can still answer, alice hears it.
        await bob.ok("call.answer", call_id=call_id)
        await alice.expect("call.participant", state="joined")
        assert (await c.get(eve, f"/api/calls/{call_id}")).status_code == 404


async def test_websocket_requires_a_valid_hello(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.user("alice@example.com")
        ws_url = c.url.replace("http", "ws") + "/ws"
        async with websockets.connect(ws_url) as ws:
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await ws.recv())["code"] == "hello_required"
        async with websockets.connect(ws_url) as ws:
            await ws.send(b"\x00binary hello")
            assert json.loads(await ws.recv())["code"] == "hello_required"
        async with websockets.connect(ws_url) as ws:
            await ws.send(json.dumps({"type": "hello", "token": "vvd_forged"}))
            assert json.loads(await ws.recv())["code"] == "bad_token"
            try:
                await ws.recv()
            except websockets.ConnectionClosed as exc:
                assert exc.rcvd is not None and exc.rcvd.code == 4401


async def test_key_messages_have_a_bucket_sized_for_the_largest_call(tmp_path: Path) -> None:
    """Joining a 32-person call costs the newcomer an announce and a key message to each of
    31 others (62 at once): under the general bucket (here 20) keys, and so media, were
    lost. Key messages draw from their own bucket (4 per possible peer banked, 2 per peer
    per second), other messages from theirs; a flood past it is still refused, counted."""
    async with cluster(tmp_path, rate_limit_burst=20, rate_limit_per_second=1.0) as c:
        (alice,) = await c.user("alice@example.com")
        (bob,) = await c.user("bob@example.com")
        call_id = (await alice.ok("call.invite", handles=["bob@example.com"]))["call_id"]
        await bob.expect("call.incoming")
        await bob.ok("call.answer", call_id=call_id)
        await alice.expect("call.participant", state="joined")

        async def answers(count: int) -> list[dict]:
            out: list[dict] = []
            while len(out) < count:
                event = await alice.next_event()
                if event["type"] in ("result", "error"):
                    out.append(event)
            return out

        joining = 2 * 31
        for n in range(joining):
            await alice.send_raw(
                json.dumps({"type": "call.e2ee", "id": n, "call_id": call_id, "payload": f"k{n}"})
            )
        replies = await answers(joining)
        assert all(a["type"] == "result" for a in replies), replies
        got = [(await bob.expect("call.e2ee"))["payload"] for _ in range(joining)]
        assert got == [f"k{n}" for n in range(joining)]  # all of them, in order
        # The general bucket is untouched by key messages.
        assert (await alice.request("ping"))["type"] == "pong"

        flood = 4 * 32
        flooding = json.dumps({"type": "call.e2ee", "call_id": call_id, "payload": "x"})
        for _ in range(flood):
            await alice.send_raw(flooding)
        limited = [a for a in await answers(flood) if a.get("code") == "rate_limited"]
        assert len(limited) == joining, len(limited)  # the bank held 128; 62 were spent
        metrics = (await c.http.get(f"{c.url}/metrics")).text
        assert _counter(metrics, "rate_limited") >= joining
        c.advance(1)  # refills 64 per second
        assert (await alice.request("call.e2ee", call_id=call_id, payload="y"))["type"] == "result"
