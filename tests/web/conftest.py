"""One `visavis serve` and one Chromium for all the web tests (browser tests stay lean)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from playwright.async_api import Browser

from tests.browser import chromium
from tests.served import served_fixture

# Short enough that the missed-call test waits seconds, long enough that a callee on a
# loaded machine still answers in time.
RING_TIMEOUT = "12"

server = served_fixture("web", scope="package", VISAVIS_SIGNALING__RING_TIMEOUT=RING_TIMEOUT)


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched
