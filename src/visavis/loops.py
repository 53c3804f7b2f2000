"""The event loop every ``visavis serve`` process runs: uvloop when installed (it is, with
uvicorn[standard]), for fewer microseconds per packet and per message on every part's
hot path; the tests run the same loop (docs/processes.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a new uvloop loop (asyncio's without uvloop)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
