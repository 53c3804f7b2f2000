"""Fixtures for the store contract suite, run against every implementation: the SQLite
fast path (``SqliteStore``, what ``open_store`` gives for SQLite), ``SqlStore`` on
aiosqlite and ``SqlStore`` on PostgreSQL; one SQLite file or fresh PostgreSQL database
per test.

PostgreSQL: we connect to the maintenance database ``test`` (trust auth, user
``postgres`` or ``root``, override with ``VISAVIS_TEST_POSTGRES``), create
``visavis_test_<random>`` and drop it afterwards, so leftovers of other runs never matter
and nothing we did not create is touched.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from visavis.store.base import Store
from visavis.store.sql import SqlStore
from visavis.store.sqlite import SqliteStore

PG_CANDIDATES = [
    os.environ.get("VISAVIS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
    "postgresql://root@127.0.0.1:5432/test",
]


async def _admin_connection() -> tuple[asyncpg.Connection, str]:
    """A connection to the maintenance database and the DSN that worked."""
    errors: list[str] = []
    for dsn in dict.fromkeys(PG_CANDIDATES):
        try:
            return await asyncpg.connect(dsn, timeout=5), dsn
        except (OSError, asyncpg.PostgresError) as exc:
            errors.append(f"{dsn}: {exc}")
    raise RuntimeError("PostgreSQL is not reachable: " + "; ".join(errors))


@dataclass
class StoreFactory:
    """Opens stores on one database; ``open()`` again gives a "restarted" node."""

    url: str
    make: Callable[[str], Store]
    opened: list[Store]

    async def open(self) -> Store:
        store = self.make(self.url)
        await store.open()
        self.opened.append(store)
        return store


@pytest.fixture(
    params=["sqlite", "sqlite-sqlalchemy", pytest.param("postgres", marks=pytest.mark.postgres)],
)
async def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    cleanup: Callable[[], Awaitable[None]] | None = None
    make: Callable[[str], Store] = SqlStore
    if request.param.startswith("sqlite"):
        url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'visavis.sqlite3'}"
        if request.param == "sqlite":
            make = SqliteStore
    else:
        admin, dsn = await _admin_connection()
        name = f"visavis_test_{uuid.uuid4().hex[:12]}"
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        base = dsn.removeprefix("postgresql://").rsplit("/", 1)[0]
        url = f"postgresql+asyncpg://{base}/{name}"

        async def drop() -> None:
            conn, _ = await _admin_connection()
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()

        cleanup = drop
    factory = StoreFactory(url, make, [])
    try:
        yield factory
    finally:
        for store in factory.opened:
            await store.close()
        if cleanup is not None:
            await cleanup()


@pytest.fixture
async def store(store_factory: StoreFactory) -> Store:
    return await store_factory.open()
