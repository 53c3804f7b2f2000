"""The store on SQLAlchemy 2 async Core: PostgreSQL (asyncpg), or SQLite (aiosqlite).

``open_store`` uses it for PostgreSQL; SQLite goes to ``visavis.store.sqlite.SqliteStore``,
which is much cheaper per query (see docs/store.md). On aiosqlite it still works and is
tested, as a reference for the fast path.

The schema belongs to the Alembic migrations in ``visavis/store/migrations``; ``open()``
runs them to head, so a fresh file and an existing cluster are handled alike and several
nodes starting at once on PostgreSQL serialize on an advisory lock. The ``Table`` objects
(``visavis.store.schema``) only build queries and must mirror the latest migration.

Races are decided by the database: ``update_call`` and ``update_participant`` are one
``UPDATE ... WHERE state IN (...)`` each, and the row count says who won.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from visavis.store.base import (
    CALL_FIELDS,
    GUEST_FIELDS,
    JOINED_GUEST_STATES,
    PARTICIPANT_FIELDS,
    Call,
    CallLink,
    CallState,
    Device,
    DeviceKind,
    Guest,
    GuestState,
    HandleTaken,
    Participant,
    ParticipantState,
    Store,
    StoreError,
    User,
)
from visavis.store.schema import (
    CALL_COLS,
    DEVICE_COLS,
    GUEST_COLS,
    LINK_COLS,
    PARTICIPANT_COLS,
    SQLITE_BUSY_TIMEOUT,
    USER_COLS,
    call_record,
    calls,
    check_fields,
    device_keys,
    device_record,
    devices,
    guest_record,
    guests,
    handle_key,
    link_record,
    links,
    migration_lock,
    participant_record,
    participants,
    upgrade,
    user_record,
    user_values,
    users,
)

# Each record's columns, as Column objects in record field order.
_USER_COLUMNS = [users.c[c] for c in USER_COLS]
_DEVICE_COLUMNS = [devices.c[c] for c in DEVICE_COLS]
_CALL_COLUMNS = [calls.c[c] for c in CALL_COLS]
_PARTICIPANT_COLUMNS = [participants.c[c] for c in PARTICIPANT_COLS]
_LINK_COLUMNS = [links.c[c] for c in LINK_COLS]
_GUEST_COLUMNS = [guests.c[c] for c in GUEST_COLS]


def _as_dict(record: object, columns: Sequence[str]) -> dict[str, Any]:
    return {c: getattr(record, c) for c in columns}


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers run beside the writer; foreign keys are off by default in SQLite."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
    cursor.close()


class SqlStore(Store):
    """:class:`Store` on PostgreSQL (``postgresql+asyncpg://...``) or SQLite
    (``sqlite+aiosqlite:///path``). Construct, then ``await open()``."""

    def __init__(
        self, url: str, *, pool_size: int = 10, max_overflow: int = 10, pool_timeout: float = 5.0
    ) -> None:
        self.url = url
        # PostgreSQL's connection pool (database_pool_size, _max_overflow, _pool_timeout):
        # a request that finds every connection taken waits pool_timeout for one, then
        # sqlalchemy.exc.TimeoutError, which signaling answers as overloaded.
        self.pool: dict[str, Any] = {
            "pool_size": pool_size,
            "max_overflow": max_overflow,
            "pool_timeout": pool_timeout,
        }
        self.busy_errors = (PoolTimeout,)
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
            kwargs.update(self.pool)
        engine = create_async_engine(url, **kwargs)
        if url.get_backend_name() == "sqlite":
            sa.event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        try:
            async with migration_lock(), engine.begin() as conn:
                await conn.run_sync(upgrade)
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
        values = dict(zip((*USER_COLS, "handle_key"), user_values(user), strict=True))
        try:
            async with self.engine.begin() as conn:
                await conn.execute(users.insert().values(values))
        except IntegrityError as exc:
            # Only the handle is expected to clash; a duplicate id is a caller bug.
            if await self.get_user_by_handle(handle) is not None:
                raise HandleTaken(handle) from exc
            raise
        return user

    async def get_user(self, user_id: str) -> User | None:
        row = await self._one(sa.select(*_USER_COLUMNS).where(users.c.id == user_id))
        return None if row is None else user_record(row)

    async def get_user_by_handle(self, handle: str) -> User | None:
        row = await self._one(
            sa.select(*_USER_COLUMNS).where(users.c.handle_key == handle_key(handle))
        )
        return None if row is None else user_record(row)

    async def get_users(self, user_ids: Collection[str]) -> dict[str, User]:
        if not user_ids:
            return {}
        rows = await self._all(sa.select(*_USER_COLUMNS).where(users.c.id.in_(list(user_ids))))
        return {user.id: user for user in map(user_record, rows)}

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
            values = _as_dict(device, DEVICE_COLS)
            await conn.execute(devices.insert().values(values))
        return device

    async def get_device(self, device_id: str) -> Device | None:
        row = await self._one(sa.select(*_DEVICE_COLUMNS).where(devices.c.id == device_id))
        return None if row is None else device_record(row)

    async def get_device_by_token_hash(self, token_hash: str) -> Device | None:
        row = await self._one(sa.select(*_DEVICE_COLUMNS).where(devices.c.token_hash == token_hash))
        return None if row is None else device_record(row)

    async def list_devices(self, user_id: str, *, include_revoked: bool = False) -> list[Device]:
        query = sa.select(*_DEVICE_COLUMNS).where(devices.c.user_id == user_id)
        if not include_revoked:
            query = query.where(devices.c.revoked_at.is_(None))
        rows = await self._all(query.order_by(devices.c.created_at, devices.c.id))
        return [device_record(row) for row in rows]

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

    async def set_device_key(self, device_id: str, public_key: str, *, now: float) -> str:
        with contextlib.suppress(IntegrityError):  # the first key stays
            async with self.engine.begin() as conn:
                await conn.execute(
                    device_keys.insert().values(
                        device_id=device_id, public_key=public_key, created_at=now
                    )
                )
        keys = await self.get_device_keys([device_id])
        return keys[device_id]

    async def get_device_keys(self, device_ids: Collection[str]) -> dict[str, str]:
        if not device_ids:
            return {}
        query: sa.Select[Any] = sa.select(device_keys.c.device_id, device_keys.c.public_key)
        query = query.where(device_keys.c.device_id.in_(list(device_ids)))
        rows: list[Any] = await self._all(query)
        return {str(device): str(key) for device, key in rows}

    # -- calls -------------------------------------------------------------------
    async def create_call(self, call: Call, participants_: Sequence[Participant]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(calls.insert().values(_as_dict(call, CALL_COLS)))
            if participants_:
                rows = [
                    {**_as_dict(p, PARTICIPANT_COLS), "position": i}
                    for i, p in enumerate(participants_, start=1)
                ]
                await conn.execute(participants.insert(), rows)

    async def get_call(self, call_id: str) -> Call | None:
        row = await self._one(sa.select(*_CALL_COLUMNS).where(calls.c.id == call_id))
        return None if row is None else call_record(row)

    async def update_call(
        self, call_id: str, *, only_if_state: Collection[CallState] | None = None, **changes: Any
    ) -> bool:
        check_fields(changes, CALL_FIELDS, "update_call")
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
        values = _as_dict(p, PARTICIPANT_COLS)
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
        updates = {c: insert.excluded[c] for c in (*PARTICIPANT_COLS, "position")}
        del updates["call_id"], updates["user_id"]
        return cast(
            sa.Executable,
            insert.on_conflict_do_update(index_elements=["call_id", "user_id"], set_=updates),
        )

    async def get_participants(self, call_id: str) -> list[Participant]:
        rows = await self._all(
            sa.select(*_PARTICIPANT_COLUMNS)
            .where(participants.c.call_id == call_id)
            .order_by(participants.c.position, participants.c.user_id)
        )
        return [participant_record(row) for row in rows]

    async def update_participant(
        self,
        call_id: str,
        user_id: str,
        *,
        only_if_state: Collection[ParticipantState] | None = None,
        **changes: Any,
    ) -> bool:
        check_fields(changes, PARTICIPANT_FIELDS, "update_participant")
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
            sa.select(*_CALL_COLUMNS)
            .where(calls.c.id.in_(mine), calls.c.state != "ended")
            .order_by(calls.c.created_at, calls.c.id)
        )
        return [call_record(row) for row in rows]

    async def expired_rings(self, now: float, *, limit: int = 500) -> list[Participant]:
        rows = await self._all(
            sa.select(*_PARTICIPANT_COLUMNS)
            .where(participants.c.state == "ringing", participants.c.ring_deadline <= now)
            .order_by(participants.c.ring_deadline, participants.c.call_id, participants.c.user_id)
            .limit(limit)
        )
        return [participant_record(row) for row in rows]

    async def call_history(
        self, user_id: str, *, limit: int = 50, before: float | None = None
    ) -> list[tuple[Call, list[Participant]]]:
        mine = sa.select(participants.c.call_id).where(participants.c.user_id == user_id)
        query = sa.select(*_CALL_COLUMNS).where(calls.c.id.in_(mine))
        if before is not None:
            query = query.where(calls.c.created_at < before)
        query = query.order_by(calls.c.created_at.desc(), calls.c.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            found = [call_record(row) for row in await conn.execute(query)]
            if not found:
                return []
            prows = await conn.execute(
                sa.select(*_PARTICIPANT_COLUMNS)
                .where(participants.c.call_id.in_([c.id for c in found]))
                .order_by(participants.c.position, participants.c.user_id)
            )
            by_call: dict[str, list[Participant]] = {c.id: [] for c in found}
            for p in map(participant_record, prows):
                by_call[p.call_id].append(p)
        return [(c, by_call[c.id]) for c in found]

    # -- call links and their guests ---------------------------------------------
    async def create_link(self, link: CallLink) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(links.insert().values(_as_dict(link, LINK_COLS)))

    async def get_link(self, link_id: str) -> CallLink | None:
        row = await self._one(sa.select(*_LINK_COLUMNS).where(links.c.id == link_id))
        return None if row is None else link_record(row)

    async def get_link_by_token_hash(self, token_hash: str) -> CallLink | None:
        row = await self._one(sa.select(*_LINK_COLUMNS).where(links.c.token_hash == token_hash))
        return None if row is None else link_record(row)

    async def list_links(self, user_id: str) -> list[CallLink]:
        query = sa.select(*_LINK_COLUMNS).where(links.c.user_id == user_id)
        rows = await self._all(query.order_by(links.c.created_at.desc(), links.c.id.desc()))
        return [link_record(row) for row in rows]

    async def revoke_link(self, link_id: str, *, now: float) -> bool:
        query = links.update().where(links.c.id == link_id, links.c.revoked_at.is_(None))
        return await self._changed(query.values(revoked_at=now))

    async def set_link_call(self, link_id: str, call_id: str, *, previous: str | None) -> bool:
        same = links.c.call_id.is_(None) if previous is None else links.c.call_id == previous
        query = links.update().where(links.c.id == link_id, same)
        return await self._changed(query.values(call_id=call_id))

    async def create_guest(self, guest: Guest) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(guests.insert().values(_as_dict(guest, GUEST_COLS)))

    async def get_guest(self, guest_id: str) -> Guest | None:
        row = await self._one(sa.select(*_GUEST_COLUMNS).where(guests.c.id == guest_id))
        return None if row is None else guest_record(row)

    async def get_guest_by_token_hash(self, token_hash: str) -> Guest | None:
        query = sa.select(*_GUEST_COLUMNS).where(guests.c.token_hash == token_hash)
        row = await self._one(query)
        return None if row is None else guest_record(row)

    async def list_guests(self, link_id: str) -> list[Guest]:
        query = sa.select(*_GUEST_COLUMNS).where(guests.c.link_id == link_id)
        rows = await self._all(query.order_by(guests.c.created_at, guests.c.id))
        return [guest_record(row) for row in rows]

    async def call_guests(self, call_ids: Collection[str]) -> dict[str, list[Guest]]:
        found: dict[str, list[Guest]] = {c: [] for c in call_ids}
        if not found:
            return found
        query = sa.select(*_GUEST_COLUMNS).where(
            guests.c.call_id.in_(list(found)), guests.c.state.in_(list(JOINED_GUEST_STATES))
        )
        for guest in map(
            guest_record, await self._all(query.order_by(guests.c.created_at, guests.c.id))
        ):
            found[guest.call_id or ""].append(guest)
        return found

    async def update_guest(
        self, guest_id: str, *, only_if_state: Collection[GuestState] | None = None, **changes: Any
    ) -> bool:
        check_fields(changes, GUEST_FIELDS, "update_guest")
        where = [guests.c.id == guest_id]
        if only_if_state is not None:
            where.append(guests.c.state.in_(list(only_if_state)))
        if not changes:
            return await self._exists(sa.select(guests.c.id).where(*where))
        return await self._changed(guests.update().where(*where).values(**changes))

    # -- helpers -----------------------------------------------------------------
    async def _one(self, query: sa.Select[Any]) -> sa.Row[Any] | None:
        async with self.engine.connect() as conn:
            row: sa.Row[Any] | None = (await conn.execute(query)).first()
        return row

    async def _all(self, query: sa.Select[Any]) -> list[sa.Row[Any]]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).all())

    async def _exists(self, query: sa.Select[Any]) -> bool:
        return await self._one(query.limit(1)) is not None

    async def _changed(self, query: sa.Update) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(query)
        return result.rowcount > 0
