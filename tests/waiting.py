"""Waiting for a condition instead of sleeping a fixed time.

A fixed sleep is either too short on a loaded machine (flaky) or too long everywhere
(slow). These poll a condition until it holds, failing with ``what`` after ``within``
seconds; the polling interval only bounds how late the wait notices, not whether it
passes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def until(condition: Callable[[], object], what: str, within: float = 10.0) -> None:
    """Return as soon as ``condition()`` is true; AssertionError after ``within`` s."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.01)


def until_sync(condition: Callable[[], object], what: str, within: float = 10.0) -> None:
    """:func:`until` for synchronous tests."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(0.01)


async def until_async(
    condition: Callable[[], Awaitable[T]], what: str, within: float = 10.0, every: float = 0.01
) -> T:
    """:func:`until` for a condition that must be awaited (an HTTP GET, a query, a browser's
    getStats); returns its first true value. ``every``: the polling interval (a browser
    page is asked every 0.25 s, not every 10 ms, to leave the machine's cores to it)."""
    deadline = time.monotonic() + within
    while not (value := await condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what} (last: {value!r})")
        await asyncio.sleep(every)
    return value
