"""Real PostgreSQL and Redis for integration tests, isolated per test.

CI's PostgreSQL (127.0.0.1:5432, trust auth, database ``test``) and Redis (127.0.0.1:6379)
keep whatever earlier runs left, so each test creates its own database and drops it, and
uses its own Redis key prefix, deleted afterwards with SCAN + DEL (never FLUSHDB).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import redis.asyncio as aioredis

PG_CANDIDATES = [
    os.environ.get("VISAVIS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
    "postgresql://root@127.0.0.1:5432/test",
]
REDIS_URL = os.environ.get("VISAVIS_TEST_REDIS", "redis://127.0.0.1:6379/0")


async def admin_connection() -> tuple[asyncpg.Connection, str]:
    """A connection to the maintenance database and the DSN that worked."""
    errors: list[str] = []
    for dsn in dict.fromkeys(PG_CANDIDATES):
        try:
            return await asyncpg.connect(dsn, timeout=5), dsn
        except (OSError, asyncpg.PostgresError) as exc:
            errors.append(f"{dsn}: {exc}")
    raise RuntimeError("PostgreSQL is not reachable: " + "; ".join(errors))


@asynccontextmanager
async def fresh_postgres() -> AsyncIterator[str]:
    """A new empty database for this test; yields its SQLAlchemy URL, drops it after."""
    admin, dsn = await admin_connection()
    name = f"visavis_test_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = dsn.removeprefix("postgresql://").rsplit("/", 1)[0]
    try:
        yield f"postgresql+asyncpg://{base}/{name}"
    finally:
        admin, _ = await admin_connection()
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def delete_redis_prefix(prefix: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@asynccontextmanager
async def fresh_redis_prefix() -> AsyncIterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    prefix = f"visavis-test-{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        await delete_redis_prefix(prefix)
