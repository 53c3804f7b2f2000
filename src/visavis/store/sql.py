"""The store on SQLAlchemy 2 async Core: SQLite (aiosqlite) by default, PostgreSQL (asyncpg).

The schema belongs to the Alembic migrations in ``visavis/store/migrations``; ``open()``
runs them to head, so a fresh file and an existing cluster are handled alike and several
nodes starting at once on PostgreSQL serialize on an advisory lock. The ``Table`` objects
below only build queries and must mirror the latest migration.

Races are decided by the database: ``update_call`` and ``update_participant`` are one
``UPDATE ... WHERE state IN (...)`` each, and the row count says who won.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from visavis.store.base import (
    CALL_FIELDS,
    PARTICIPANT_FIELDS,
    Call,
    CallState,
    Device,
    DeviceKind,
    HandleTaken,
    Participant,
    ParticipantState,
    Store,
    StoreError,
    User,
)

MIGRATIONS = Path(__file__).with_name("migrations")
# Arbitrary constant: the PostgreSQL advisory lock that serializes concurrent migrations.
_MIGRATION_LOCK = 0x76697361
SQLITE_BUSY_TIMEOUT = 30.0

metadata = sa.MetaData()

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("handle", sa.String(255), nullable=False),
    sa.Column("handle_key", sa.String(255), nullable=False, unique=True),
    sa.Column("display_name", sa.String(255), nullable=False),
    sa.Column("password_hash", sa.String(512), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
)

devices = sa.Table(
    "user_devices",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id"), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("token_hash", sa.String(255), nullable=False, unique=True),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("revoked_at", sa.Double(), nullable=True),
    sa.Column("push_subscription", sa.JSON(none_as_null=True), nullable=True),
)

calls = sa.Table(
    "calls",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("initiator_user_id", sa.String(64), nullable=False),
    sa.Column("initiator_device_id", sa.String(64), nullable=False),
    sa.Column("media", sa.String(10), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("topology", sa.String(10), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("room_id", sa.String(64), nullable=True),
    sa.Column("answered_at", sa.Double(), nullable=True),
    sa.Column("ended_at", sa.Double(), nullable=True),
    sa.Column("end_reason", sa.String(64), nullable=True),
)

participants = sa.Table(
    "call_participants",
    metadata,
    sa.Column("call_id", sa.String(64), sa.ForeignKey("calls.id"), primary_key=True),
    sa.Column("user_id", sa.String(64), primary_key=True),
    # Invitation order: 1, 2, ... within a call (ties, possible only when two nodes add
    # participants to one call at the same instant, fall back to user_id).
    sa.Column("position", sa.Integer(), nullable=False),
    sa.Column("role", sa.String(10), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("invited_at", sa.Double(), nullable=False),
    sa.Column("invited_by", sa.String(64), nullable=False),
    sa.Column("device_id", sa.String(64), nullable=True),
    sa.Column("ring_deadline", sa.Double(), nullable=True),
    sa.Column("joined_at", sa.Double(), nullable=True),
    sa.Column("left_at", sa.Double(), nullable=True),
)

_USER_COLS = ("id", "handle", "display_name", "password_hash", "created_at")
_DEVICE_COLS = (
    "id",
    "user_id",
    "name",
    "kind",
    "token_hash",
    "created_at",
    "revoked_at",
    "push_subscription",
)
_CALL_COLS = (
    "id",
    "initiator_user_id",
    "initiator_device_id",
    "media",
    "state",
    "topology",
    "created_at",
    "room_id",
    "answered_at",
    "ended_at",
    "end_reason",
)
_PARTICIPANT_COLS = (
    "call_id",
    "user_id",
    "role",
    "state",
    "invited_at",
    "invited_by",
    "device_id",
    "ring_deadline",
    "joined_at",
    "left_at",
)


def handle_key(handle: str) -> str:
    """The key that makes handles unique regardless of case (Unicode case folding)."""
    return handle.casefold()


def _user(row: sa.RowMapping) -> User:
    return User(**{c: row[c] for c in _USER_COLS})


def _device(row: sa.RowMapping) -> Device:
    return Device(**{c: row[c] for c in _DEVICE_COLS})


def _call(row: sa.RowMapping) -> Call:
    return Call(**{c: row[c] for c in _CALL_COLS})


def _participant(row: sa.RowMapping) -> Participant:
    return Participant(**{c: row[c] for c in _PARTICIPANT_COLS})


def _call_values(call: Call) -> dict[str, Any]:
    return {c: getattr(call, c) for c in _CALL_COLS}


def _participant_values(p: Participant) -> dict[str, Any]:
    return {c: getattr(p, c) for c in _PARTICIPANT_COLS}


def _check_fields(changes: Mapping[str, Any], allowed: frozenset[str], what: str) -> None:
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"{what} cannot change {sorted(unknown)}; allowed: {sorted(allowed)}")


def _upgrade(connection: Connection) -> None:
    """Run the migrations to head on ``connection`` (called inside ``run_sync``)."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


_MIGRATION_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _migration_lock() -> asyncio.Lock:
    """Alembic keeps its running context in a module global, so two stores migrating at
    once in one process (one event loop) would trample each other: take turns. Across
    processes PostgreSQL serializes on an advisory lock; SQLite assumes one process
    creates its file first."""
    loop = asyncio.get_running_loop()
    lock = _MIGRATION_LOCKS.get(loop)
    if lock is None:
        lock = _MIGRATION_LOCKS[loop] = asyncio.Lock()
    return lock


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers run beside the writer; foreign keys are off by default in SQLite."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
    cursor.close()


class SqlStore(Store):
    """:class:`Store` on SQLite (``sqlite+aiosqlite:///path``) or PostgreSQL
    (``postgresql+asyncpg://...``). Construct, then ``await open()``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: AsyncEngine | None = None

    # -- lifecycle ---------------------------------------------------------------
    async def open(self) -> None:
        if self._engine is not None:
            return
        url = make_url(self.url)
        kwargs: dict[str, Any] = {}
        if url.get_backend_name() == "sqlite":
            if url.database and url.database != ":memory:":
                # Blocking, but once at startup and before any I/O that matters.
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            else:
                # An in-memory database lives in one connection: share it (tests only;
                # nothing survives close()).
                kwargs["poolclass"] = StaticPool
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT}
        else:
            kwargs["pool_pre_ping"] = True
        engine = create_async_engine(url, **kwargs)
        if url.get_backend_name() == "sqlite":
            sa.event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        try:
            async with _migration_lock(), engine.begin() as conn:
                await conn.run_sync(_upgrade)
        except BaseException:
            await engine.dispose()
            raise
        self._engine = engine

    async def close(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except Exception:
            return False
        return True

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise StoreError("store is not open: await open() first")
        return self._engine

    # -- users -------------------------------------------------------------------
    async def create_user(
        self, *, user_id: str, handle: str, display_name: str, password_hash: str, now: float
    ) -> User:
        user = User(
            id=user_id,
            handle=handle,
            display_name=display_name,
            password_hash=password_hash,
            created_at=now,
        )
        values = {c: getattr(user, c) for c in _USER_COLS}
        try:
            async with self.engine.begin() as conn:
                await conn.execute(users.insert().values(handle_key=handle_key(handle), **values))
        except IntegrityError as exc:
            # Only the handle is expected to clash; a duplicate id is a caller bug.
            if await self.get_user_by_handle(handle) is not None:
                raise HandleTaken(handle) from exc
            raise
        return user

    async def get_user(self, user_id: str) -> User | None:
        row = await self._one(sa.select(users).where(users.c.id == user_id))
        return None if row is None else _user(row)

    async def get_user_by_handle(self, handle: str) -> User | None:
        row = await self._one(sa.select(users).where(users.c.handle_key == handle_key(handle)))
        return None if row is None else _user(row)

    async def get_users(self, user_ids: Collection[str]) -> dict[str, User]:
        if not user_ids:
            return {}
        rows = await self._all(sa.select(users).where(users.c.id.in_(list(user_ids))))
        return {row["id"]: _user(row) for row in rows}

    # -- devices -----------------------------------------------------------------
    async def create_device(
        self,
        *,
        device_id: str,
        user_id: str,
        name: str,
        kind: DeviceKind,
        token_hash: str,
        now: float,
    ) -> Device:
        device = Device(
            id=device_id,
            user_id=user_id,
            name=name,
            kind=kind,
            token_hash=token_hash,
            created_at=now,
        )
        async with self.engine.begin() as conn:
            values = {c: getattr(device, c) for c in _DEVICE_COLS}
            await conn.execute(devices.insert().values(values))
        return device

    async def get_device(self, device_id: str) -> Device | None:
        row = await self._one(sa.select(devices).where(devices.c.id == device_id))
        return None if row is None else _device(row)

    async def get_device_by_token_hash(self, token_hash: str) -> Device | None:
        row = await self._one(sa.select(devices).where(devices.c.token_hash == token_hash))
        return None if row is None else _device(row)

    async def list_devices(self, user_id: str, *, include_revoked: bool = False) -> list[Device]:
        query = sa.select(devices).where(devices.c.user_id == user_id)
        if not include_revoked:
            query = query.where(devices.c.revoked_at.is_(None))
        rows = await self._all(query.order_by(devices.c.created_at, devices.c.id))
        return [_device(row) for row in rows]

    async def revoke_device(self, device_id: str, *, now: float) -> bool:
        query = (
            devices.update()
            .where(devices.c.id == device_id, devices.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return await self._changed(query)

    async def set_push_subscription(
        self, device_id: str, subscription: dict[str, Any] | None
    ) -> None:
        query = devices.update().where(devices.c.id == device_id)
        await self._changed(query.values(push_subscription=subscription))

    # -- calls -------------------------------------------------------------------
    async def create_call(self, call: Call, participants_: Sequence[Participant]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(calls.insert().values(_call_values(call)))
            if participants_:
                rows = [
                    {**_participant_values(p), "position": i}
                    for i, p in enumerate(participants_, start=1)
                ]
                await conn.execute(participants.insert(), rows)

    async def get_call(self, call_id: str) -> Call | None:
        row = await self._one(sa.select(calls).where(calls.c.id == call_id))
        return None if row is None else _call(row)

    async def update_call(
        self, call_id: str, *, only_if_state: Collection[CallState] | None = None, **changes: Any
    ) -> bool:
        _check_fields(changes, CALL_FIELDS, "update_call")
        where = [calls.c.id == call_id]
        if only_if_state is not None:
            where.append(calls.c.state.in_(list(only_if_state)))
        if not changes:
            # Still answer the compare: does the row exist in one of those states?
            return await self._exists(sa.select(calls.c.id).where(*where))
        return await self._changed(calls.update().where(*where).values(**changes))

    async def add_participants(self, participants_: Sequence[Participant]) -> None:
        async with self.engine.begin() as conn:
            for p in participants_:
                await conn.execute(self._upsert_participant(conn, p))

    def _upsert_participant(self, conn: AsyncConnection, p: Participant) -> sa.Executable:
        """INSERT ... ON CONFLICT (call_id, user_id) DO UPDATE, placing the row last in
        invitation order; one statement, so SQLite takes its write lock up front."""
        values = _participant_values(p)
        next_position = (
            sa.select(sa.func.coalesce(sa.func.max(participants.c.position), 0) + 1)
            .where(participants.c.call_id == p.call_id)
            .scalar_subquery()
        )
        dialect = conn.dialect.name
        insert: Any
        if dialect == "postgresql":
            insert = postgresql.insert(participants)
        elif dialect == "sqlite":
            insert = sqlite.insert(participants)
        else:  # pragma: no cover - open_store only accepts the two above
            raise StoreError(f"unsupported dialect {dialect}")
        insert = insert.values(position=next_position, **values)
        updates = {c: insert.excluded[c] for c in (*_PARTICIPANT_COLS, "position")}
        del updates["call_id"], updates["user_id"]
        return cast(
            sa.Executable,
            insert.on_conflict_do_update(index_elements=["call_id", "user_id"], set_=updates),
        )

    async def get_participants(self, call_id: str) -> list[Participant]:
        rows = await self._all(
            sa.select(participants)
            .where(participants.c.call_id == call_id)
            .order_by(participants.c.position, participants.c.user_id)
        )
        return [_participant(row) for row in rows]

    async def update_participant(
        self,
        call_id: str,
        user_id: str,
        *,
        only_if_state: Collection[ParticipantState] | None = None,
        **changes: Any,
    ) -> bool:
        _check_fields(changes, PARTICIPANT_FIELDS, "update_participant")
        where = [participants.c.call_id == call_id, participants.c.user_id == user_id]
        if only_if_state is not None:
            where.append(participants.c.state.in_(list(only_if_state)))
        if not changes:
            return await self._exists(sa.select(participants.c.call_id).where(*where))
        return await self._changed(participants.update().where(*where).values(**changes))

    async def live_calls_for_user(self, user_id: str) -> list[Call]:
        mine = sa.select(participants.c.call_id).where(
            participants.c.user_id == user_id,
            participants.c.state.in_(["ringing", "joined"]),
        )
        rows = await self._all(
            sa.select(calls)
            .where(calls.c.id.in_(mine), calls.c.state != "ended")
            .order_by(calls.c.created_at, calls.c.id)
        )
        return [_call(row) for row in rows]

    async def expired_rings(self, now: float, *, limit: int = 500) -> list[Participant]:
        rows = await self._all(
            sa.select(participants)
            .where(participants.c.state == "ringing", participants.c.ring_deadline <= now)
            .order_by(participants.c.ring_deadline, participants.c.call_id, participants.c.user_id)
            .limit(limit)
        )
        return [_participant(row) for row in rows]

    async def call_history(
        self, user_id: str, *, limit: int = 50, before: float | None = None
    ) -> list[tuple[Call, list[Participant]]]:
        mine = sa.select(participants.c.call_id).where(participants.c.user_id == user_id)
        query = sa.select(calls).where(calls.c.id.in_(mine))
        if before is not None:
            query = query.where(calls.c.created_at < before)
        query = query.order_by(calls.c.created_at.desc(), calls.c.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            found = [_call(row) for row in (await conn.execute(query)).mappings()]
            if not found:
                return []
            prows = await conn.execute(
                sa.select(participants)
                .where(participants.c.call_id.in_([c.id for c in found]))
                .order_by(participants.c.position, participants.c.user_id)
            )
            by_call: dict[str, list[Participant]] = {c.id: [] for c in found}
            for row in prows.mappings():
                by_call[row["call_id"]].append(_participant(row))
        return [(c, by_call[c.id]) for c in found]

    # -- helpers -----------------------------------------------------------------
    async def _one(self, query: sa.Select[Any]) -> sa.RowMapping | None:
        async with self.engine.connect() as conn:
            row: sa.RowMapping | None = (await conn.execute(query)).mappings().first()
        return row

    async def _all(self, query: sa.Select[Any]) -> list[sa.RowMapping]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).mappings().all())

    async def _exists(self, query: sa.Select[Any]) -> bool:
        return await self._one(query.limit(1)) is not None

    async def _changed(self, query: sa.Update) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(query)
        return result.rowcount > 0
