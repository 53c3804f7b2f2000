"""The store on SQLite through the stdlib ``sqlite3``, synchronously on the event loop.

Why synchronous: an indexed SQLite query takes 5-20 µs and a WAL commit with
``synchronous=NORMAL`` does not fsync, so handing each query to a thread (aiosqlite)
and bridging through async SQLAlchemy costs far more than the query; see docs/store.md
for the measurements. Nothing here awaits between the statements of a transaction, so
transactions never interleave within the process and every method is atomic with
respect to the other coroutines of the loop.

One connection, in autocommit mode (``isolation_level=None``): a single statement is its
own transaction and ``create_call`` / ``add_participants`` wrap theirs in
``BEGIN IMMEDIATE ... COMMIT``. Statements are plain SQL strings built once from the
column lists in ``visavis.store.schema``, so sqlite3's statement cache prepares each once.

With ``synchronous=NORMAL`` the only fsyncs are WAL checkpoints, which SQLite would run
inside whichever commit crosses ``wal_autocheckpoint`` pages: a few ms (or far more on a
slow disk) with the loop blocked. So the loop's connection never checkpoints; a second
connection does ``PRAGMA wal_checkpoint(PASSIVE)`` in a worker thread every
``CHECKPOINT_INTERVAL`` seconds (writers go on meanwhile; it is what WAL is for).

The schema is still Alembic's: ``open()`` runs the migrations in a worker thread on a
second connection (SQLAlchemy over pysqlite, inside ``BEGIN IMMEDIATE``, so two processes
starting at once on one file take turns), then closes it. In-memory URLs become a named
shared-cache memory database that lives as long as the store's own connection.

Another process writing the same file makes our writes wait for its lock (busy timeout)
on the event loop: SQLite is the single-node backend; several nodes use PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

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
    call_values,
    check_fields,
    device_record,
    guest_record,
    guest_values,
    handle_key,
    link_record,
    link_values,
    migration_lock,
    participant_record,
    participant_values,
    upgrade,
    user_record,
    user_values,
)

logger = logging.getLogger(__name__)

_USERS = f"SELECT {', '.join(USER_COLS)} FROM users"
_DEVICES = f"SELECT {', '.join(DEVICE_COLS)} FROM user_devices"
_CALLS = f"SELECT {', '.join(CALL_COLS)} FROM calls"
_PARTICIPANTS = f"SELECT {', '.join(PARTICIPANT_COLS)} FROM call_participants"
_LINKS = f"SELECT {', '.join(LINK_COLS)} FROM call_links"
_GUESTS = f"SELECT {', '.join(GUEST_COLS)} FROM link_guests"
_IN_ORDER = " ORDER BY position, user_id"
# A list parameter as one JSON array: one statement text (prepared once) for any length,
# and no limit on the number of SQL variables.
_IN_JSON = "IN (SELECT value FROM json_each(?))"


def _insert(table: str, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


_INSERT_USER = _insert("users", (*USER_COLS, "handle_key"))
_INSERT_DEVICE = _insert("user_devices", DEVICE_COLS)
_INSERT_CALL = _insert("calls", CALL_COLS)
_INSERT_PARTICIPANT = _insert("call_participants", (*PARTICIPANT_COLS, "position"))
_INSERT_LINK = _insert("call_links", LINK_COLS)
_INSERT_GUEST = _insert("link_guests", GUEST_COLS)
# Insert or replace, placing the row last in invitation order (a re-invite moves it).
_UPSERT_PARTICIPANT = (
    f"INSERT INTO call_participants ({', '.join(PARTICIPANT_COLS)}, position) "
    f"VALUES ({', '.join('?' * len(PARTICIPANT_COLS))}, "
    "(SELECT COALESCE(MAX(position), 0) + 1 FROM call_participants WHERE call_id = ?)) "
    "ON CONFLICT (call_id, user_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in (*PARTICIPANT_COLS[2:], "position"))
)

CHECKPOINT_INTERVAL = 1.0
# After a checkpoint the WAL file is reused from its start; beyond this it is truncated.
_JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024

_KEYS = {"calls": ("id",), "call_participants": ("call_id", "user_id"), "link_guests": ("id",)}


@lru_cache(maxsize=512)
def _update_sql(table: str, fields: tuple[str, ...], states: int | None) -> str:
    """``UPDATE table SET fields... WHERE key... [AND state IN (?...)]``, or with no
    fields the same compare as ``SELECT 1``. ``fields`` are checked by the caller."""
    where = " AND ".join(f"{k} = ?" for k in _KEYS[table])
    if states is not None:
        where += f" AND state IN ({', '.join('?' * states)})"
    if not fields:
        return f"SELECT 1 FROM {table} WHERE {where} LIMIT 1"
    return f"UPDATE {table} SET {', '.join(f'{f} = ?' for f in fields)} WHERE {where}"


def _decode_device(row: Sequence[Any]) -> Device:
    subscription = row[7]
    if subscription is None:
        return device_record(row)
    return device_record((*row[:7], json.loads(subscription)))


def sqlite_target(url: str) -> tuple[str, bool]:
    """``(database, uri)`` for ``sqlite3.connect`` from a ``sqlite+aiosqlite://`` URL;
    an in-memory URL gets a fresh named shared-cache database."""
    database = make_url(url).database
    if not database or database == ":memory:":
        return f"file:visavis-{uuid.uuid4().hex}?mode=memory&cache=shared", True
    return database, False


def connect(database: str, uri: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode with WAL, ``synchronous=NORMAL``, foreign keys
    and the busy timeout."""
    db = sqlite3.connect(
        database,
        uri=uri,
        timeout=SQLITE_BUSY_TIMEOUT,
        isolation_level=None,
        check_same_thread=False,  # opened in a worker thread, then used on the loop only
        cached_statements=256,
    )
    try:
        db.execute("PRAGMA journal_mode=WAL")  # stays "memory" for in-memory databases
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        db.close()
        raise
    return db


def migrate(database: str, uri: bool = False) -> None:
    """Run the Alembic migrations to head on a connection of our own, in one
    ``BEGIN IMMEDIATE`` transaction (blocking: call it in a thread)."""
    engine = sa.create_engine(
        "sqlite://", creator=lambda: connect(database, uri), poolclass=sa.pool.NullPool
    )

    # pysqlite would start no transaction before DDL; take the write lock up front.
    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        with engine.begin() as conn:
            upgrade(conn)
    finally:
        engine.dispose()


def _open(database: str, uri: bool) -> tuple[sqlite3.Connection, sqlite3.Connection | None]:
    """The loop's connection, migrated, and for a WAL file the checkpointer's."""
    if not uri:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    db = connect(database, uri)  # first: it keeps an in-memory database alive
    checkpointer = None
    try:
        migrate(database, uri)
        if db.execute("PRAGMA journal_mode").fetchone() == ("wal",):
            db.execute("PRAGMA wal_autocheckpoint=0")
            db.execute(f"PRAGMA journal_size_limit={_JOURNAL_SIZE_LIMIT}")
            checkpointer = connect(database, uri)
    except BaseException:
        db.close()
        raise
    return db, checkpointer


def _checkpoint(checkpointer: sqlite3.Connection) -> None:
    checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


class SqliteStore(Store):
    """:class:`Store` on SQLite (``sqlite+aiosqlite:///path``, or ``sqlite+aiosqlite://``
    in memory), queried synchronously. Construct, then ``await open()``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._db: sqlite3.Connection | None = None
        self._checkpoints: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------
    async def open(self) -> None:
        if self._db is not None:
            return
        database, uri = sqlite_target(self.url)
        async with migration_lock():
            db, checkpointer = await asyncio.to_thread(_open, database, uri)
        if self._db is not None:  # opened concurrently meanwhile
            db.close()
            if checkpointer is not None:
                checkpointer.close()
            return
        self._db = db
        self._closing = asyncio.Event()
        if checkpointer is not None:
            self._checkpoints = asyncio.create_task(
                self._checkpoint_loop(checkpointer), name="sqlite-checkpoint"
            )

    async def close(self) -> None:
        if self._db is None:
            return
        db, self._db = self._db, None
        if self._checkpoints is not None:
            # Not cancelled: a checkpoint running in its thread must end before we close.
            self._closing.set()
            task, self._checkpoints = self._checkpoints, None
            await task
        db.close()  # the last connection to close checkpoints and removes the WAL

    async def _checkpoint_loop(self, checkpointer: sqlite3.Connection) -> None:
        try:
            while not self._closing.is_set():
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), CHECKPOINT_INTERVAL)
                try:
                    await asyncio.to_thread(_checkpoint, checkpointer)
                except sqlite3.Error:  # pragma: no cover - retried next time
                    logger.warning("WAL checkpoint failed", exc_info=True)
        finally:
            checkpointer.close()

    async def ping(self) -> bool:
        try:
            self.db.execute("SELECT 1").fetchall()
        except (StoreError, sqlite3.Error):
            return False
        return True

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("store is not open: await open() first")
        return self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    # Reads always fetch everything: a half-read statement would hold a read snapshot.
    def _one(self, sql: str, params: Sequence[Any]) -> Any:
        rows = self.db.execute(sql, params).fetchall()
        return rows[0] if rows else None

    def _all(self, sql: str, params: Sequence[Any]) -> list[Any]:
        return self.db.execute(sql, params).fetchall()

    def _changed(self, sql: str, params: Sequence[Any]) -> bool:
        return self.db.execute(sql, params).rowcount > 0

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
        try:
            self.db.execute(_INSERT_USER, user_values(user))
        except sqlite3.IntegrityError as exc:
            # Only the handle is expected to clash; a duplicate id is a caller bug.
            if await self.get_user_by_handle(handle) is not None:
                raise HandleTaken(handle) from exc
            raise
        return user

    async def get_user(self, user_id: str) -> User | None:
        row = self._one(f"{_USERS} WHERE id = ?", (user_id,))
        return None if row is None else user_record(row)

    async def get_user_by_handle(self, handle: str) -> User | None:
        row = self._one(f"{_USERS} WHERE handle_key = ?", (handle_key(handle),))
        return None if row is None else user_record(row)

    async def get_users(self, user_ids: Collection[str]) -> dict[str, User]:
        if not user_ids:
            return {}
        rows = self._all(f"{_USERS} WHERE id {_IN_JSON}", (json.dumps(list(user_ids)),))
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
        self.db.execute(
            _INSERT_DEVICE,
            (device_id, user_id, name, kind, token_hash, now, None, None),  # DEVICE_COLS
        )
        return device

    async def get_device(self, device_id: str) -> Device | None:
        row = self._one(f"{_DEVICES} WHERE id = ?", (device_id,))
        return None if row is None else _decode_device(row)

    async def get_device_by_token_hash(self, token_hash: str) -> Device | None:
        row = self._one(f"{_DEVICES} WHERE token_hash = ?", (token_hash,))
        return None if row is None else _decode_device(row)

    async def list_devices(self, user_id: str, *, include_revoked: bool = False) -> list[Device]:
        live = "" if include_revoked else " AND revoked_at IS NULL"
        rows = self._all(f"{_DEVICES} WHERE user_id = ?{live} ORDER BY created_at, id", (user_id,))
        return [_decode_device(row) for row in rows]

    async def revoke_device(self, device_id: str, *, now: float) -> bool:
        return self._changed(
            "UPDATE user_devices SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (now, device_id),
        )

    async def set_push_subscription(
        self, device_id: str, subscription: dict[str, Any] | None
    ) -> None:
        encoded = None if subscription is None else json.dumps(subscription)
        self._changed(
            "UPDATE user_devices SET push_subscription = ? WHERE id = ?", (encoded, device_id)
        )

    async def set_device_key(self, device_id: str, public_key: str, *, now: float) -> str:
        self.db.execute(
            "INSERT INTO device_keys (device_id, public_key, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT (device_id) DO NOTHING",
            (device_id, public_key, now),
        )
        return str(
            self._one("SELECT public_key FROM device_keys WHERE device_id = ?", (device_id,))[0]
        )

    async def get_device_keys(self, device_ids: Collection[str]) -> dict[str, str]:
        if not device_ids:
            return {}
        rows = self._all(
            f"SELECT device_id, public_key FROM device_keys WHERE device_id {_IN_JSON}",
            (json.dumps(list(device_ids)),),
        )
        return {row[0]: row[1] for row in rows}

    # -- calls -------------------------------------------------------------------
    async def create_call(self, call: Call, participants: Sequence[Participant]) -> None:
        with self._transaction() as db:
            db.execute(_INSERT_CALL, call_values(call))
            if participants:
                db.executemany(
                    _INSERT_PARTICIPANT,
                    [(*participant_values(p), i) for i, p in enumerate(participants, start=1)],
                )

    async def get_call(self, call_id: str) -> Call | None:
        row = self._one(f"{_CALLS} WHERE id = ?", (call_id,))
        return None if row is None else call_record(row)

    async def update_call(
        self, call_id: str, *, only_if_state: Collection[CallState] | None = None, **changes: Any
    ) -> bool:
        check_fields(changes, CALL_FIELDS, "update_call")
        return self._compare_and_set("calls", (call_id,), only_if_state, changes)

    async def add_participants(self, participants: Sequence[Participant]) -> None:
        if not participants:
            return
        with self._transaction() as db:
            db.executemany(
                _UPSERT_PARTICIPANT, [(*participant_values(p), p.call_id) for p in participants]
            )

    async def get_participants(self, call_id: str) -> list[Participant]:
        rows = self._all(f"{_PARTICIPANTS} WHERE call_id = ?{_IN_ORDER}", (call_id,))
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
        return self._compare_and_set(
            "call_participants", (call_id, user_id), only_if_state, changes
        )

    def _compare_and_set(
        self,
        table: str,
        key: tuple[str, ...],
        only_if_state: Collection[str] | None,
        changes: dict[str, Any],
    ) -> bool:
        """One ``UPDATE ... WHERE key AND state IN (...)``; the row count says who won.
        Without changes, whether the row exists in one of those states."""
        states = None if only_if_state is None else tuple(only_if_state)
        sql = _update_sql(table, tuple(changes), None if states is None else len(states))
        params = (*changes.values(), *key, *(states or ()))
        if not changes:
            return self._one(sql, params) is not None
        return self._changed(sql, params)

    async def live_calls_for_user(self, user_id: str) -> list[Call]:
        rows = self._all(
            f"{_CALLS} WHERE id IN (SELECT call_id FROM call_participants"
            " WHERE user_id = ? AND state IN ('ringing', 'joined'))"
            " AND state != 'ended' ORDER BY created_at, id",
            (user_id,),
        )
        return [call_record(row) for row in rows]

    async def expired_rings(self, now: float, *, limit: int = 500) -> list[Participant]:
        rows = self._all(
            f"{_PARTICIPANTS} WHERE state = 'ringing' AND ring_deadline <= ?"
            " ORDER BY ring_deadline, call_id, user_id LIMIT ?",
            (now, limit),
        )
        return [participant_record(row) for row in rows]

    async def call_history(
        self, user_id: str, *, limit: int = 50, before: float | None = None
    ) -> list[tuple[Call, list[Participant]]]:
        earlier = "" if before is None else " AND created_at < ?"
        params: tuple[Any, ...] = (user_id,) if before is None else (user_id, before)
        rows = self._all(
            f"{_CALLS} WHERE id IN (SELECT call_id FROM call_participants WHERE user_id = ?)"
            f"{earlier} ORDER BY created_at DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        found = [call_record(row) for row in rows]
        if not found:
            return []
        by_call: dict[str, list[Participant]] = {c.id: [] for c in found}
        prows = self._all(
            f"{_PARTICIPANTS} WHERE call_id {_IN_JSON}{_IN_ORDER}",
            (json.dumps(list(by_call)),),
        )
        for p in map(participant_record, prows):
            by_call[p.call_id].append(p)
        return [(c, by_call[c.id]) for c in found]

    # -- call links and their guests ---------------------------------------------
    async def create_link(self, link: CallLink) -> None:
        with self._transaction() as db:
            db.execute(_INSERT_LINK, link_values(link))

    async def get_link(self, link_id: str) -> CallLink | None:
        row = self._one(f"{_LINKS} WHERE id = ?", (link_id,))
        return None if row is None else link_record(row)

    async def get_link_by_token_hash(self, token_hash: str) -> CallLink | None:
        row = self._one(f"{_LINKS} WHERE token_hash = ?", (token_hash,))
        return None if row is None else link_record(row)

    async def list_links(self, user_id: str) -> list[CallLink]:
        rows = self._all(
            f"{_LINKS} WHERE user_id = ? ORDER BY created_at DESC, id DESC", (user_id,)
        )
        return [link_record(row) for row in rows]

    async def revoke_link(self, link_id: str, *, now: float) -> bool:
        sql = "UPDATE call_links SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
        return self._changed(sql, (now, link_id))

    async def set_link_call(self, link_id: str, call_id: str, *, previous: str | None) -> bool:
        sql = "UPDATE call_links SET call_id = ? WHERE id = ? AND call_id IS ?"
        return self._changed(sql, (call_id, link_id, previous))

    async def create_guest(self, guest: Guest) -> None:
        with self._transaction() as db:
            db.execute(_INSERT_GUEST, guest_values(guest))

    async def get_guest(self, guest_id: str) -> Guest | None:
        row = self._one(f"{_GUESTS} WHERE id = ?", (guest_id,))
        return None if row is None else guest_record(row)

    async def get_guest_by_token_hash(self, token_hash: str) -> Guest | None:
        row = self._one(f"{_GUESTS} WHERE token_hash = ?", (token_hash,))
        return None if row is None else guest_record(row)

    async def list_guests(self, link_id: str) -> list[Guest]:
        rows = self._all(f"{_GUESTS} WHERE link_id = ? ORDER BY created_at, id", (link_id,))
        return [guest_record(row) for row in rows]

    async def call_guests(self, call_ids: Collection[str]) -> dict[str, list[Guest]]:
        found: dict[str, list[Guest]] = {c: [] for c in call_ids}
        if not found:
            return found
        rows = self._all(
            f"{_GUESTS} WHERE call_id {_IN_JSON} AND state IN (?, ?) ORDER BY created_at, id",
            (json.dumps(list(found)), *JOINED_GUEST_STATES),
        )
        for guest in map(guest_record, rows):
            found[guest.call_id or ""].append(guest)
        return found

    async def update_guest(
        self, guest_id: str, *, only_if_state: Collection[GuestState] | None = None, **changes: Any
    ) -> bool:
        check_fields(changes, GUEST_FIELDS, "update_guest")
        return self._compare_and_set("link_guests", (guest_id,), only_if_state, changes)
