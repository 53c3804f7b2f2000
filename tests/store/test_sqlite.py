"""What only the SQLite fast path (``SqliteStore``) promises beyond the contract."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.waiting import until
from visavis.store import sqlite as sqlite_module
from visavis.store.base import Call, Participant
from visavis.store.sql import SqlStore
from visavis.store.sqlite import SqliteStore


def _call(call_id: str) -> Call:
    return Call(call_id, "alice", "alice-phone", "audio", "ringing", "p2p", 10.0)


def _parts(call_id: str) -> list[Participant]:
    return [
        Participant(call_id, "alice", "caller", "joined", 10.0, "alice"),
        Participant(call_id, "bob", "callee", "ringing", 10.0, "alice", ring_deadline=40.0),
    ]


async def test_files_are_interchangeable_with_sqlstore(tmp_path: Path) -> None:
    """A database written by the previous implementation (SqlStore on aiosqlite) reads
    the same through SqliteStore, and back: same schema, same JSON encoding."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}"
    sub = {"endpoint": "https://push.example/x", "keys": {"p256dh": "k", "auth": "é"}}
    old = SqlStore(url)
    await old.open()
    await old.create_user(
        user_id="alice", handle="Alice", display_name="A", password_hash="x", now=1
    )
    await old.create_device(
        device_id="d1", user_id="alice", name="web", kind="browser", token_hash="t1", now=2.0
    )
    await old.set_push_subscription("d1", sub)
    await old.create_call(_call("c1"), _parts("c1"))
    await old.close()

    new = SqliteStore(url)
    await new.open()
    user = await new.get_user_by_handle("ALICE")
    assert user is not None and user.created_at == 1.0
    device = await new.get_device("d1")
    assert device is not None and device.push_subscription == sub
    assert await new.get_participants("c1") == _parts("c1")
    await new.set_push_subscription("d1", {"endpoint": "https://push.example/y"})
    await new.create_call(_call("c2"), _parts("c2"))
    await new.close()

    old = SqlStore(url)
    await old.open()
    device = await old.get_device("d1")
    assert device is not None and device.push_subscription == {"endpoint": "https://push.example/y"}
    assert await old.get_participants("c2") == _parts("c2")
    await old.close()


async def test_pragmas_and_no_lingering_transactions(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite+aiosqlite:///{tmp_path / 'sub' / 'db.sqlite3'}")
    await store.open()
    try:
        db = store.db
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
        assert db.execute("PRAGMA foreign_keys").fetchone() == (1,)
        assert db.execute("PRAGMA busy_timeout").fetchone() == (30000,)
        await store.create_call(_call("c1"), _parts("c1"))
        await store.get_participants("c1")
        await store.get_call("c1")
        await store.update_participant("c1", "bob", only_if_state={"ringing"}, state="joined")
        await store.call_history("bob")
        assert not db.in_transaction
        # Another connection (another process) sees every write at once.
        other = sqlite3.connect(tmp_path / "sub" / "db.sqlite3")
        try:
            assert other.execute(
                "SELECT state FROM call_participants WHERE user_id = 'bob'"
            ).fetchall() == [("joined",)]
        finally:
            other.close()
    finally:
        await store.close()


async def test_failed_transaction_leaves_the_connection_usable(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}")
    await store.open()
    try:
        await store.create_call(_call("c1"), _parts("c1"))
        try:
            await store.create_call(_call("c1"), _parts("c1"))  # duplicate call id
        except sqlite3.IntegrityError:
            pass
        else:  # pragma: no cover
            raise AssertionError("duplicate call accepted")
        assert not store.db.in_transaction
        await store.create_call(_call("c2"), _parts("c2"))
        assert [c.id for c, _ in await store.call_history("bob")] == ["c2", "c1"]
    finally:
        await store.close()


async def test_closed_store_fails_ping(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}")
    assert not await store.ping()
    await store.open()
    await store.open()  # idempotent
    assert await store.ping()
    await store.close()
    await store.close()
    assert not await store.ping()


async def test_wal_is_checkpointed_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "CHECKPOINT_INTERVAL", 0.05)
    path = tmp_path / "db.sqlite3"
    store = SqliteStore(f"sqlite+aiosqlite:///{path}")
    await store.open()
    try:
        assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        size = path.stat().st_size
        for i in range(300):
            await store.create_call(_call(f"c{i}"), _parts(f"c{i}"))
        # The checkpointer copies the WAL into the database file.
        await until(lambda: path.stat().st_size > size, "a checkpoint grows the database")
    finally:
        await store.close()
    wal = Path(f"{path}-wal")
    assert not wal.exists()  # noqa: ASYNC240 - the last close checkpoints and removes it
