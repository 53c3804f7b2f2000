"""Excess load on `visavis serve --role signaling` (PostgreSQL) gets a clear, counted
refusal at once, never a timeout or an internal error.

Two guards, each driven past its limit on the real command: ``max_concurrent_requests``
(work in progress per process: one more is refused before it waits for anything) and the
database pool (``database_pool_size`` + ``database_max_overflow`` connections; a request
that finds none free within ``database_pool_timeout`` is refused as overloaded, where it
used to fail with SQLAlchemy's QueuePool TimeoutError as ``internal_error``).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.served import Served, serve
from tests.services import fresh_postgres
from tests.waiting import until_async

BURST = 60


def _counter(metrics: str, where: str, reason: str) -> float:
    pattern = (
        rf'visavis_signaling_overloaded_total\{{reason="{reason}",where="{where}"\}} ([0-9.e+]+)'
    )
    found = re.search(pattern, metrics)
    return float(found.group(1)) if found else 0.0


async def _device_token(http: httpx.AsyncClient) -> str:
    """Sign up and in, retrying what was refused as overloaded (as a client should: with
    a one-connection pool and a 1 ms wait, the server's own background queries are enough
    to refuse a request now and then)."""
    answers: list[httpx.Response] = []

    async def done(path: str, body: dict[str, str]) -> bool:
        answers.append(await http.post(path, json=body))
        assert answers[-1].status_code in (200, 201, 503), answers[-1].text
        return answers[-1].status_code != 503

    user = {"handle": "alice@example.com", "password": "x" * 12}
    await until_async(lambda: done("/api/signup", user), "signed up", within=30)
    await until_async(
        lambda: done("/api/login", {**user, "device_name": "laptop"}), "signed in", within=30
    )
    return str(answers[-1].json()["token"])


async def _burst(server: Served) -> tuple[list[httpx.Response], str, str, str]:
    """BURST concurrent authenticated API requests, each on its own connection; the
    answers, the device token, and the metrics before and after."""
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as http:
        token = await _device_token(http)
        before = (await http.get("/metrics")).text
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30, limits=limits) as http:
        headers = {"Authorization": f"Bearer {token}"}
        answers = await asyncio.gather(
            *(http.get("/api/calls", headers=headers) for _ in range(BURST))
        )
        metrics = (await http.get("/metrics")).text
    return list(answers), token, before, metrics


def _check_refusals(answers: list[httpx.Response]) -> int:
    """Every answer is 200 or a well-formed 503 overloaded; the number of 503s."""
    refused = 0
    for r in answers:
        if r.status_code == 503:
            assert r.json() == {
                "code": "overloaded",
                "message": "the server is at capacity: retry in a second",
            }
            assert r.headers["retry-after"] == "1"
            refused += 1
        else:
            assert r.status_code == 200, (r.status_code, r.text)
    return refused


async def test_requests_beyond_the_limit_are_refused_at_once(tmp_path: Path) -> None:
    async with fresh_postgres() as database:
        env = {
            "VISAVIS_DATABASE_URL": database,
            "VISAVIS_SIGNALING__MAX_CONCURRENT_REQUESTS": "2",
        }
        with serve(tmp_path / "data", "--role", "signaling", env=env) as server:
            answers, token, before, metrics = await _burst(server)
            refused = _check_refusals(answers)
            assert 0 < refused < BURST  # some served, the excess refused
            counted = _counter(metrics, "http", "limit") - _counter(before, "http", "limit")
            assert counted == refused
            # Health and metrics are never refused; the server is fine afterwards.
            async with httpx.AsyncClient(base_url=server.http_url) as http:
                r = await http.get("/api/calls", headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == 200
            assert "Traceback" not in server.log(), server.log()


async def test_an_exhausted_database_pool_is_overload_not_an_error(tmp_path: Path) -> None:
    async with fresh_postgres() as database:
        env = {
            "VISAVIS_DATABASE_URL": database,
            "VISAVIS_DATABASE_POOL_SIZE": "1",
            "VISAVIS_DATABASE_MAX_OVERFLOW": "0",
            "VISAVIS_DATABASE_POOL_TIMEOUT": "0.001",
        }
        with serve(tmp_path / "data", "--role", "signaling", env=env) as server:
            answers, token, before, metrics = await _burst(server)
            refused = _check_refusals(answers)
            assert refused > 0
            pool = "database_pool"
            counted = _counter(metrics, "http", pool) - _counter(before, "http", pool)
            assert counted == refused
            assert 'visavis_rejected_messages_total{reason="internal_error"}' not in metrics
            # A device connecting while the pool is exhausted: an error it can act on,
            # and the WebSocket closed with 1013 (try again later), or a normal welcome.
            outcomes = await asyncio.gather(*(_hello(server, token) for _ in range(BURST)))
            assert set(outcomes) <= {"welcome", "overloaded"}, outcomes
            assert "overloaded" in outcomes
            assert "Traceback" not in server.log(), server.log()


async def _hello(server: Served, token: str) -> str:
    async with connect(server.ws_url) as ws:
        await ws.send(json.dumps({"type": "hello", "token": token}))
        first = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if first["type"] == "welcome":
            return "welcome"
        assert first["type"] == "error" and first["code"] == "overloaded", first
        try:
            await asyncio.wait_for(ws.recv(), 30)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1013
            return "overloaded"
        raise AssertionError("the connection stayed open after 'overloaded'")
