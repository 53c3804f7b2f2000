"""Accounts, devices, tokens, presence, contacts, ICE servers."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

from tests.signaling.harness import cluster


async def test_signup_login_and_handles(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.signup("Alice@Example.com", display_name="Alice A.")
        dup = await c.http.post(
            f"{c.url}/api/signup", json={"handle": "alice@example.com", "password": "x" * 10}
        )
        assert dup.status_code == 409 and dup.json()["code"] == "handle_taken"
        bad = await c.http.post(
            f"{c.url}/api/signup", json={"handle": "alice", "password": "x" * 10}
        )
        assert bad.status_code == 422 and bad.json()["code"] == "invalid_request"
        assert bad.json()["message"].startswith("handle:")
        short = await c.http.post(
            f"{c.url}/api/signup", json={"handle": "b@example.com", "password": "short"}
        )
        assert short.status_code == 422
        phone = await c.http.post(
            f"{c.url}/api/signup", json={"handle": "+1 555-123-4567", "password": "x" * 10}
        )
        assert phone.status_code == 201 and phone.json()["handle"] == "+15551234567"

        wrong = await c.http.post(
            f"{c.url}/api/login",
            json={"handle": "alice@example.com", "password": "nope-nope", "device_name": "x"},
        )
        assert wrong.status_code == 401 and wrong.json()["code"] == "bad_credentials"
        unknown = await c.http.post(
            f"{c.url}/api/login",
            json={"handle": "zed@example.com", "password": "nope-nope", "device_name": "x"},
        )
        assert unknown.status_code == 401 and unknown.json()["code"] == "bad_credentials"

        laptop = await c.login("alice@example.com", "laptop", "laptop")
        me = (await c.get(laptop, "/api/me")).json()
        assert me["handle"] == "alice@example.com" and me["display_name"] == "Alice A."


async def test_devices_list_presence_and_revoke(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.signup("alice@example.com")
        laptop = await c.login("alice@example.com", "laptop", "laptop")
        phone = await c.login("alice@example.com", "phone", "phone", connect=False)
        (bob,) = await c.user("bob@example.com")

        devices = {d["name"]: d for d in (await c.get(laptop, "/api/devices")).json()}
        assert devices["laptop"]["online"] is True and devices["laptop"]["current"] is True
        assert devices["phone"]["online"] is False and devices["phone"]["kind"] == "phone"

        contact = (await c.get(bob, "/api/users/alice@example.com")).json()
        assert contact["display_name"] == "alice" and contact["reachable"] is True
        assert (await c.get(bob, "/api/users/nobody@example.com")).status_code == 404

        # Bob cannot revoke Alice's device.
        r = await c.http.delete(
            f"{c.url}/api/devices/{laptop.device_id}",
            headers={"Authorization": f"Bearer {bob.token}"},
        )
        assert r.status_code == 404
        # Alice revokes her laptop from her phone: its socket closes, its token dies.
        r = await c.http.delete(
            f"{c.url}/api/devices/{laptop.device_id}",
            headers={"Authorization": f"Bearer {phone.token}"},
        )
        assert r.status_code == 204
        closed = await laptop.expect("_closed")
        assert closed["code"] == 4401
        denied = await c.get(laptop, "/api/me")
        assert denied.status_code == 401 and denied.json()["code"] == "token_revoked"
        reconnect = await laptop.connect()
        assert reconnect["code"] == "token_revoked"
        assert [d["name"] for d in (await c.get(phone, "/api/devices")).json()] == ["phone"]
        contact = (await c.get(bob, "/api/users/alice@example.com")).json()
        assert contact["reachable"] is False

        # A revoked device no longer rings.
        call = await bob.ok("call.invite", handles=["alice@example.com"])
        await phone.connect()
        ring = await phone.expect("call.incoming")
        assert ring["call_id"] == call["call_id"]


async def test_rest_requires_a_token(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        for path in ("/api/me", "/api/devices", "/api/calls", "/api/ice-servers"):
            r = await c.http.get(f"{c.url}{path}")
            assert r.status_code == 401 and r.json()["code"] == "missing_token", path
        r = await c.http.get(f"{c.url}/api/me", headers={"Authorization": "Bearer vvd_forged"})
        assert r.status_code == 401 and r.json()["code"] == "bad_token"


async def test_ice_servers_carry_coturn_rest_credentials(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        (alice,) = await c.user("alice@example.com")
        body = (await c.get(alice, "/api/ice-servers")).json()
        stun, turn = body["ice_servers"]
        assert stun == {"urls": ["stun:127.0.0.1:3478"], "username": None, "credential": None}
        expiry, user_id = turn["username"].split(":")
        assert int(expiry) == int(c.clock.now()) + body["ttl"]
        expected = base64.b64encode(
            hmac.new(b"test-secret", turn["username"].encode(), hashlib.sha1).digest()
        ).decode()
        assert turn["credential"] == expected
        assert alice.welcome["ice_servers"][1]["username"].endswith(user_id)


async def test_health_and_metrics(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        assert (await c.http.get(f"{c.url}/healthz")).json() == {"status": "ok"}
        landing = await c.http.get(f"{c.url}/")
        assert landing.status_code == 200 and "<title>visavis</title>" in landing.text
        ready = await c.http.get(f"{c.url}/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        (alice,) = await c.user("alice@example.com")
        (bob,) = await c.user("bob@example.com")
        call = await alice.ok("call.invite", handles=["bob@example.com"])
        await bob.expect("call.incoming")
        text = (await c.http.get(f"{c.url}/metrics")).text
        assert "visavis_ws_connections 2.0" in text
        assert 'visavis_calls_started_total{kind="1:1"} 1.0' in text
        assert "visavis_ring_latency_seconds_count 1.0" in text
        assert 'visavis_calls_live{state="ringing"} 1.0' in text
        await bob.ok("call.answer", call_id=call["call_id"])
        text = (await c.http.get(f"{c.url}/metrics")).text
        assert 'visavis_calls_live{state="ringing"} 0.0' in text
        assert 'visavis_calls_live{state="active"} 1.0' in text
        await bob.ok("call.leave", call_id=call["call_id"])
        await alice.expect("call.ended")
        text = (await c.http.get(f"{c.url}/metrics")).text
        assert 'visavis_calls_live{state="active"} 0.0' in text
        assert 'visavis_calls_ended_total{reason="hangup"} 1.0' in text
