"""One `visavis serve` and one Chromium per test module (browser tests stay lean)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright

from tests.browser import launch_chromium
from tests.served import Served, serve

# Short enough that the missed-call test waits seconds, long enough that a callee under
# a loaded machine still answers in time.
RING_TIMEOUT = "8"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(
        tmp_path_factory.mktemp("web"), env={"VISAVIS_SIGNALING__RING_TIMEOUT": RING_TIMEOUT}
    ) as served:
        yield served


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await launch_chromium(playwright)
        try:
            yield chromium
        finally:
            await chromium.close()
