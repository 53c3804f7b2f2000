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
        for reason in ("malformed_json", "unknown_type", "invalid_message", "message_too_large",
                       "binary_not_supported", "unknown_user", "cannot_call_self"):
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
