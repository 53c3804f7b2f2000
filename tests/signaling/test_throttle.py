"""Sign-ins and sign-ups under abuse: growing delays per address and per handle (429 with
Retry-After, counted), password hashing on a bounded pool of threads (503 when full)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.signaling.harness import Cluster, cluster
from visavis.signaling.auth import PasswordsBusy, PasswordWorkers, hash_password
from visavis.signaling.ratelimit import Backoff, SignInThrottle


def test_backoff_grows_leaks_and_forgives() -> None:
    b = Backoff(3, leak=10.0, base=1.0, ceiling=5.0)
    assert [b.strike("k", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.wait("k", 0.0) == 0.0
    assert b.strike("k", 0.0) == 1.0 and b.wait("k", 0.5) == 0.5
    assert b.strike("k", 0.0) == 2.0
    assert [b.strike("k", 0.0) for _ in range(3)] == [4.0, 5.0, 5.0]  # capped
    assert b.wait("other", 0.0) == 0.0
    # Eight strikes leak away at one per 10 s: after 60 s two are left, within the free three.
    assert b.strike("k", 60.0) == 0.0
    b.forgive("k")
    assert b.wait("k", 60.0) == 0.0 and len(b) == 0


def test_backoff_keeps_a_bounded_number_of_keys() -> None:
    b = Backoff(1, leak=1.0, max_keys=100)
    for i in range(1000):
        b.strike(f"10.0.{i // 256}.{i % 256}", float(i))
    assert len(b) <= 100
    assert b.strike("latest", 2000.0) == 0.0


def test_sign_in_throttle_scopes() -> None:
    t = SignInThrottle(failures_per_address=4, failures_per_handle=2, signups_per_address=1)
    for _ in range(3):
        t.login_failed("10.0.0.1", "alice@example.com", 0.0)
    assert t.login_wait("10.0.0.1", "alice@example.com", 0.0) == ("handle", 1.0)
    assert t.login_wait("10.0.0.2", "alice@example.com", 0.0) == ("handle", 1.0)
    assert t.login_wait("10.0.0.1", "bob@example.com", 0.0) is None
    t.login_failed("10.0.0.1", "bob@example.com", 0.0)
    t.login_failed("10.0.0.1", "carol@example.com", 0.0)
    assert t.login_wait("10.0.0.1", "dave@example.com", 0.0) == ("address", 1.0)
    t.login_succeeded("alice@example.com")
    assert t.login_wait("10.0.0.2", "alice@example.com", 0.0) is None
    t.signed_up("10.0.0.1", 0.0)
    assert t.signup_wait("10.0.0.1", 0.0) is None
    t.signed_up("10.0.0.1", 0.0)
    assert t.signup_wait("10.0.0.1", 0.0) == ("address", 1.0)


async def test_password_work_leaves_the_loop_and_is_bounded() -> None:
    workers = PasswordWorkers(workers=1, queue=0)
    try:
        stored = hash_password("correct horse battery")
        first = asyncio.create_task(workers.verify(stored, "wrong"))
        await asyncio.sleep(0)  # it took the only place and waits for its thread
        with pytest.raises(PasswordsBusy):
            await workers.verify(stored, "correct horse battery")
        for _ in range(5):  # the loop keeps running while the worker hashes
            await asyncio.sleep(0)
        assert not first.done()
        assert await first is False
        assert await workers.verify(stored, "correct horse battery") is True
        assert await workers.verify(None, "anything") is False
    finally:
        workers.close()


async def _login(c: Cluster, handle: str, password: str) -> httpx.Response:
    body: dict[str, Any] = {"handle": handle, "password": password, "device_name": "x"}
    return await c.http.post(f"{c.url}/api/login", json=body)


def _counted(c: Cluster, action: str, scope: str) -> float:
    value = c.nodes[0].metrics.registry.get_sample_value(
        "visavis_auth_throttled_total", {"action": action, "scope": scope}
    )
    return value or 0.0


async def test_login_failures_per_handle_wait_longer_each_time(tmp_path: Path) -> None:
    async with cluster(tmp_path, login_failures_per_handle=2) as c:
        await c.signup("alice@example.com")
        for _ in range(3):
            assert (await _login(c, "alice@example.com", "wrong-guess")).status_code == 401
        refused = await _login(c, "alice@example.com", "correct horse battery")
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "too_many_attempts"
        assert refused.json()["message"] == (
            "too many failed sign-ins for this handle: retry in 1 s"
        )
        assert refused.headers["retry-after"] == "1"
        assert _counted(c, "login", "handle") == 1
        c.advance(1.1)
        assert (await _login(c, "alice@example.com", "wrong-guess")).status_code == 401
        again = await _login(c, "alice@example.com", "wrong-guess")
        assert again.status_code == 429 and again.headers["retry-after"] == "2"
        c.advance(2.1)
        ok = await _login(c, "alice@example.com", "correct horse battery")
        assert ok.status_code == 200, ok.text
        # A success forgives the handle: the next mistake is not delayed.
        assert (await _login(c, "alice@example.com", "wrong-guess")).status_code == 401
        assert (await _login(c, "alice@example.com", "correct horse battery")).status_code == 200


async def test_login_failures_per_address_and_signups(tmp_path: Path) -> None:
    async with cluster(tmp_path, login_failures_per_address=2, signups_per_address=2) as c:
        for i in range(3):
            assert (await _login(c, f"nobody{i}@example.com", "wrong-guess")).status_code == 401
        refused = await _login(c, "someone@example.com", "wrong-guess")
        assert refused.status_code == 429
        assert "from this address" in refused.json()["message"]
        assert _counted(c, "login", "address") == 1
        for i in range(3):
            await c.signup(f"user{i}@example.com")
        body = {"handle": "user9@example.com", "password": "correct horse battery"}
        signup = await c.http.post(f"{c.url}/api/signup", json=body)
        assert signup.status_code == 429 and signup.json()["code"] == "too_many_attempts"
        assert signup.json()["message"] == "too many sign-ups from this address: retry in 1 s"
        assert _counted(c, "signup", "address") == 1
        c.advance(1.1)
        assert (await c.http.post(f"{c.url}/api/signup", json=body)).status_code == 201


async def test_full_password_pool_answers_503(tmp_path: Path) -> None:
    async with cluster(tmp_path, password_workers=1, password_queue=0) as c:
        await c.signup("alice@example.com")
        answers = await asyncio.gather(
            *(_login(c, "alice@example.com", "wrong-guess") for _ in range(6))
        )
        codes = sorted(r.status_code for r in answers)
        assert 401 in codes and 503 in codes, codes
        busy = next(r for r in answers if r.status_code == 503)
        assert busy.json()["code"] == "auth_busy" and busy.headers["retry-after"] == "1"
        sample = c.nodes[0].metrics.registry.get_sample_value("visavis_auth_busy_total")
        assert sample == codes.count(503)
