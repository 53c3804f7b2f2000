"""One `visavis serve` and one Chromium for all the web tests (browser tests stay lean)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser

from tests.browser import chromium
from tests.served import Served, serve

# Short enough that the missed-call test waits seconds, long enough that a callee on a
# loaded machine still answers in time.
RING_TIMEOUT = "12"
# The SFU drops a participant with no media for dead_timeout (10 s): a browser that is
# starved of CPU on this shared machine (4-5 Chromium encoders on 2 cores) can take longer
# than that from join to first packet. The client rejoins either way; 30 s keeps the
# group test about the client, not the machine's load.
SFU_DEAD_TIMEOUT = "30"


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(
        tmp_path_factory.mktemp("web"),
        env={
            "VISAVIS_SIGNALING__RING_TIMEOUT": RING_TIMEOUT,
            "VISAVIS_SFU__DEAD_TIMEOUT": SFU_DEAD_TIMEOUT,
        },
    ) as served:
        yield served


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched
