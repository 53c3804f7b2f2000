"""What both SQL stores share: table definitions, record <-> row mapping, migrations.

The schema belongs to the Alembic migrations in ``visavis/store/migrations``; the
``Table`` objects below only build queries (``SqlStore``) and must mirror the latest
migration. ``SqliteStore`` writes its SQL by hand from the same column lists.

Rows are read positionally: every query selects exactly the ``*_COLS`` of its record, in
the record's field order, so ``User(*row)`` builds the record without a name lookup per
column.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from visavis.store.base import Call, CallLink, Device, Guest, Participant, User

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

device_keys = sa.Table(
    "device_keys",
    metadata,
    sa.Column("device_id", sa.String(64), sa.ForeignKey("user_devices.id"), primary_key=True),
    sa.Column("public_key", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
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

links = sa.Table(
    "call_links",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id"), nullable=False),
    sa.Column("token_hash", sa.String(255), nullable=False, unique=True),
    sa.Column("media", sa.String(10), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("expires_at", sa.Double(), nullable=False),
    sa.Column("revoked_at", sa.Double(), nullable=True),
    sa.Column("call_id", sa.String(64), nullable=True),
)

guests = sa.Table(
    "link_guests",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("link_id", sa.String(64), sa.ForeignKey("call_links.id"), nullable=False),
    sa.Column("token_hash", sa.String(255), nullable=False, unique=True),
    sa.Column("display_name", sa.String(100), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("call_id", sa.String(64), nullable=True),
)

# Each record's columns in its dataclass field order (the order rows are selected in).
USER_COLS = ("id", "handle", "display_name", "password_hash", "created_at")
DEVICE_COLS = (
    "id",
    "user_id",
    "name",
    "kind",
    "token_hash",
    "created_at",
    "revoked_at",
    "push_subscription",
)
CALL_COLS = (
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
PARTICIPANT_COLS = (
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

LINK_COLS = (
    "id",
    "user_id",
    "token_hash",
    "media",
    "created_at",
    "expires_at",
    "revoked_at",
    "call_id",
)
GUEST_COLS = ("id", "link_id", "token_hash", "display_name", "state", "created_at", "call_id")


def handle_key(handle: str) -> str:
    """The key that makes handles unique regardless of case (Unicode case folding)."""
    return handle.casefold()


# -- rows -> records (positional, columns as in *_COLS) -----------------------------------
def user_record(row: Sequence[Any]) -> User:
    return User(*row)


def device_record(row: Sequence[Any]) -> Device:
    """``push_subscription`` (last) must already be decoded from JSON."""
    return Device(*row)


def call_record(row: Sequence[Any]) -> Call:
    return Call(*row)


def participant_record(row: Sequence[Any]) -> Participant:
    return Participant(*row)


def link_record(row: Sequence[Any]) -> CallLink:
    return CallLink(*row)


def guest_record(row: Sequence[Any]) -> Guest:
    return Guest(*row)


# -- records -> rows -----------------------------------------------------------------------
def user_values(user: User) -> tuple[Any, ...]:
    """USER_COLS followed by handle_key."""
    return (
        user.id,
        user.handle,
        user.display_name,
        user.password_hash,
        user.created_at,
        handle_key(user.handle),
    )


def call_values(call: Call) -> tuple[Any, ...]:
    return tuple(getattr(call, c) for c in CALL_COLS)


def participant_values(p: Participant) -> tuple[Any, ...]:
    return tuple(getattr(p, c) for c in PARTICIPANT_COLS)


def link_values(link: CallLink) -> tuple[Any, ...]:
    return tuple(getattr(link, c) for c in LINK_COLS)


def guest_values(guest: Guest) -> tuple[Any, ...]:
    return tuple(getattr(guest, c) for c in GUEST_COLS)


def check_fields(changes: Mapping[str, Any], allowed: frozenset[str], what: str) -> None:
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"{what} cannot change {sorted(unknown)}; allowed: {sorted(allowed)}")


# -- migrations ----------------------------------------------------------------------------
def upgrade(connection: Connection) -> None:
    """Run the migrations to head on ``connection`` (inside its transaction)."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


_MIGRATION_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def migration_lock() -> asyncio.Lock:
    """Alembic keeps its running context in a module global, so two stores migrating at
    once in one process (one event loop) would trample each other: take turns. Across
    processes PostgreSQL serializes on an advisory lock, SQLite on ``BEGIN IMMEDIATE``
    (``SqliteStore``; ``SqlStore`` on aiosqlite assumes one process creates the file
    first)."""
    loop = asyncio.get_running_loop()
    lock = _MIGRATION_LOCKS.get(loop)
    if lock is None:
        lock = _MIGRATION_LOCKS[loop] = asyncio.Lock()
    return lock
