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

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services import fresh_postgres
from visavis.store.base import Store
from visavis.store.sql import SqlStore
from visavis.store.sqlite import SqliteStore


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
    make: Callable[[str], Store] = SqlStore
    async with contextlib.AsyncExitStack() as stack:
        if request.param.startswith("sqlite"):
            url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'visavis.sqlite3'}"
            if request.param == "sqlite":
                make = SqliteStore
        else:
            url = await stack.enter_async_context(fresh_postgres())
        factory = StoreFactory(url, make, [])
        try:
            yield factory
        finally:
            for store in factory.opened:
                await store.close()


@pytest.fixture
async def store(store_factory: StoreFactory) -> Store:
    return await store_factory.open()
