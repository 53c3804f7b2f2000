"""Store benchmark: CPU and wall time per operation, one backend at a time.

For each backend it opens a fresh database, seeds a few users, devices and calls, then
times ``--iterations`` sequential calls of each operation and repeats that ``--runs``
times; the table shows the median over runs of µs per operation. CPU time is the whole
process's (``time.process_time``), so work done in driver threads (aiosqlite) counts.

Backends:
  sqlite             what ``open_store("sqlite+aiosqlite:///...")`` returns (the fast path)
  sqlite-sqlalchemy  ``SqlStore`` on aiosqlite (async SQLAlchemy, the previous default)
  postgres           ``SqlStore`` on asyncpg, database created at 127.0.0.1:5432 for the
                     run and dropped afterwards (override the maintenance DSN with
                     VISAVIS_TEST_POSTGRES)

    .venv/bin/python benchmarks/store_ops.py                  # all three
    .venv/bin/python benchmarks/store_ops.py --backend sqlite --iterations 5000 --runs 7
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from visavis.store import open_store
from visavis.store.base import Call, Participant, Store
from visavis.store.sql import SqlStore

BACKENDS = ("sqlite", "sqlite-sqlalchemy", "postgres")
PG_CANDIDATES = [
    os.environ.get("VISAVIS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
    "postgresql://root@127.0.0.1:5432/test",
]


@asynccontextmanager
async def fresh_postgres() -> AsyncIterator[str]:
    """A new database ``visavis_bench_<random>``; yields its URL and drops it after."""
    admin: asyncpg.Connection | None = None
    errors = []
    for dsn in dict.fromkeys(PG_CANDIDATES):
        try:
            admin = await asyncpg.connect(dsn, timeout=5)
            break
        except (OSError, asyncpg.PostgresError) as exc:
            errors.append(f"{dsn}: {exc}")
    if admin is None:
        raise RuntimeError("PostgreSQL is not reachable: " + "; ".join(errors))
    name = f"visavis_bench_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    base = dsn.removeprefix("postgresql://").rsplit("/", 1)[0]
    try:
        yield f"postgresql+asyncpg://{base}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@asynccontextmanager
async def backend_store(backend: str) -> AsyncIterator[Store]:
    store: Store
    with tempfile.TemporaryDirectory(prefix="visavis-bench-") as tmp:
        sqlite_url = f"sqlite+aiosqlite:///{Path(tmp) / 'visavis.sqlite3'}"
        if backend == "postgres":
            async with fresh_postgres() as url:
                store = SqlStore(url)
                await store.open()
                try:
                    yield store
                finally:
                    await store.close()
            return
        store = open_store(sqlite_url) if backend == "sqlite" else SqlStore(sqlite_url)
        await store.open()
        try:
            yield store
        finally:
            await store.close()


def _call(call_id: str) -> Call:
    return Call(
        id=call_id,
        initiator_user_id="u0",
        initiator_device_id="u0-d0",
        media="video",
        state="ringing",
        topology="p2p",
        created_at=time.time(),
    )


def _participants(call_id: str) -> list[Participant]:
    now = time.time()
    return [
        Participant(call_id, "u0", "caller", "joined", now, "u0", device_id="u0-d0"),
        Participant(call_id, "u1", "callee", "ringing", now, "u0", ring_deadline=now + 30),
    ]


async def seed(store: Store, users: int = 200, devices: int = 3) -> None:
    for i in range(users):
        await store.create_user(
            user_id=f"u{i}", handle=f"U{i}@bench.test", display_name=f"u{i}",
            password_hash="$argon2id$x", now=time.time(),
        )
        for d in range(devices):
            await store.create_device(
                device_id=f"u{i}-d{d}", user_id=f"u{i}", name=f"d{d}", kind="phone",
                token_hash=f"token-{i}-{d}", now=time.time(),
            )
    await store.create_call(_call("seed"), _participants("seed"))


def operations(store: Store) -> dict[str, Callable[[int], Awaitable[object]]]:
    """Each takes the iteration number; all target rows that exist."""
    run = uuid.uuid4().hex[:8]
    states = ("ringing", "joined")

    async def update_participant_cas(i: int) -> object:
        # Alternates ringing -> joined -> ringing, so every compare-and-set wins.
        won = await store.update_participant(
            "seed", "u1", only_if_state={states[i % 2]}, state=states[(i + 1) % 2]
        )
        assert won
        return won

    async def update_call_cas(i: int) -> object:
        won = await store.update_call(
            "seed", only_if_state={("ringing", "active")[i % 2]},
            state=("active", "ringing")[i % 2],
        )
        assert won
        return won

    return {
        "get_user": lambda i: store.get_user(f"u{i % 200}"),
        "get_user_by_handle": lambda i: store.get_user_by_handle(f"u{i % 200}@BENCH.test"),
        "get_device_by_token_hash": lambda i: store.get_device_by_token_hash(
            f"token-{i % 200}-1"
        ),
        "list_devices": lambda i: store.list_devices(f"u{i % 200}"),
        "create_call": lambda i: store.create_call(
            _call(f"{run}-{i}"), _participants(f"{run}-{i}")
        ),
        "update_participant CAS": update_participant_cas,
        "update_call CAS": update_call_cas,
        "get_participants": lambda i: store.get_participants("seed"),
    }


async def bench_backend(backend: str, iterations: int, runs: int) -> dict[str, tuple[float, float]]:
    """Operation -> (median CPU µs, median wall µs) per call."""
    cpu: dict[str, list[float]] = {}
    wall: dict[str, list[float]] = {}
    async with backend_store(backend) as store:
        await seed(store)
        for r in range(runs):
            for name, op in operations(store).items():
                for i in range(min(200, iterations)):  # warm up (statement caches, pools)
                    await op(i + 2 * iterations * (r + 1) if name == "create_call" else i)
                c0, w0 = time.process_time(), time.perf_counter()
                for i in range(iterations):
                    await op(i)
                c1, w1 = time.process_time(), time.perf_counter()
                cpu.setdefault(name, []).append((c1 - c0) / iterations * 1e6)
                wall.setdefault(name, []).append((w1 - w0) / iterations * 1e6)
    return {n: (statistics.median(cpu[n]), statistics.median(wall[n])) for n in cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=[*BACKENDS, "all"], default="all")
    parser.add_argument("--iterations", type=int, default=2000, help="calls per op and run")
    parser.add_argument("--runs", type=int, default=5, help="runs; the median is shown")
    args = parser.parse_args()
    args.iterations += args.iterations % 2  # the CAS operations toggle a state: keep it even
    backends = BACKENDS if args.backend == "all" else (args.backend,)
    results = {b: asyncio.run(bench_backend(b, args.iterations, args.runs)) for b in backends}
    ops = list(next(iter(results.values())))
    header = f"{'operation':<26}" + "".join(f"{b + ' cpu/wall µs':>30}" for b in backends)
    print(header)
    print("-" * len(header))
    for op in ops:
        cells = "".join(
            f"{results[b][op][0]:>20.1f} /{results[b][op][1]:>7.1f}" for b in backends
        )
        print(f"{op:<26}{cells}")


if __name__ == "__main__":
    main()
