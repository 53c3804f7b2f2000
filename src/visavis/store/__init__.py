"""Durable state of signaling: :class:`Store` and its SQL implementation.

``open_store(url)`` picks the implementation from the URL (``SqliteStore`` for SQLite,
``SqlStore`` for PostgreSQL); the caller awaits ``open()``.
"""

from __future__ import annotations

from visavis.store.base import (
    CALL_FIELDS,
    PARTICIPANT_FIELDS,
    Call,
    CallState,
    Device,
    DeviceKind,
    HandleTaken,
    MediaKind,
    Participant,
    ParticipantRole,
    ParticipantState,
    Store,
    StoreError,
    Topology,
    User,
)

__all__ = [
    "CALL_FIELDS",
    "PARTICIPANT_FIELDS",
    "Call",
    "CallState",
    "Device",
    "DeviceKind",
    "HandleTaken",
    "MediaKind",
    "Participant",
    "ParticipantRole",
    "ParticipantState",
    "Store",
    "StoreError",
    "Topology",
    "User",
    "open_store",
]

SUPPORTED_SCHEMES = ("sqlite+aiosqlite", "postgresql+asyncpg")


def open_store(
    url: str, *, pool_size: int = 10, max_overflow: int = 10, pool_timeout: float = 5.0
) -> Store:
    """An un-opened store for ``url``; ``await store.open()`` connects and migrates.

    Only async drivers work: ``sqlite+aiosqlite:///path/to/file`` or
    ``postgresql+asyncpg://user@host/db``. The pool settings apply to PostgreSQL (SQLite
    is queried synchronously on one connection).
    """
    scheme = url.partition("://")[0]
    if scheme in ("sqlite", "postgresql", "postgres", "postgresql+psycopg2"):
        wanted = "sqlite+aiosqlite" if scheme == "sqlite" else "postgresql+asyncpg"
        raise ValueError(
            f"store URL {scheme}:// needs an async driver: use {wanted}://{url.partition('://')[2]}"
        )
    if scheme not in SUPPORTED_SCHEMES:
        raise ValueError(
            f"unsupported store URL scheme {scheme!r}: use one of "
            + ", ".join(f"{s}://" for s in SUPPORTED_SCHEMES)
        )
    # Imported late: SQLAlchemy and Alembic are heavy.
    if scheme == "sqlite+aiosqlite":
        # The stdlib sqlite3, synchronously: ~10x cheaper per query than aiosqlite through
        # async SQLAlchemy (docs/store.md). The "+aiosqlite" stays for compatibility.
        from visavis.store.sqlite import SqliteStore

        return SqliteStore(url)
    from visavis.store.sql import SqlStore

    return SqlStore(url, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout)
