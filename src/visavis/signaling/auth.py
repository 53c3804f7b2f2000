"""Passwords (argon2) and device tokens (random, stored only as a SHA-256 hash).

A device token is 256 random bits, so a fast hash is enough to store it: a stolen
database yields no usable tokens, and lookup stays one indexed query.

A password hash costs ~0.3 s of CPU (argon2id, 64 MiB, 4 lanes): never on an event loop.
:class:`PasswordWorkers` runs them on a few threads of their own (argon2-cffi releases the
GIL), with a bounded queue: past it a sign-in is refused at once (``auth_busy``) instead
of waiting behind a flood. (The workers are not niced: on a busy machine a niced hash
took over 10 s, longer than clients wait; see docs/processes.md.)
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

T = TypeVar("T")

_hasher = PasswordHasher()
# A hash to verify against when the handle is unknown, so timing does not reveal it.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


class PasswordsBusy(Exception):
    """Every worker is busy and the queue is full: refuse the sign-in, retry shortly."""


class PasswordWorkers:
    """Hash and verify passwords off the event loop, on at most ``workers`` threads.

    :param queue: hashes allowed to wait for a worker; one more raises :class:`PasswordsBusy`.
    """

    def __init__(self, workers: int = 1, queue: int = 16) -> None:
        self.workers = workers
        self.limit = workers + queue
        self.pending = 0
        self._pool = ThreadPoolExecutor(workers, "visavis-argon2")

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.pending >= self.limit:
            raise PasswordsBusy(f"{self.pending} password checks in progress")
        self.pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, fn, *args)
        finally:
            self.pending -= 1

    async def hash(self, password: str) -> str:
        return await self._run(hash_password, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Like :func:`verify_password` (an unknown user costs as much as a wrong password)."""
        return await self._run(verify_password, password_hash, password)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def new_token() -> str:
    return "vvd_" + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_id() -> str:
    return secrets.token_hex(12)
