"""One browser in a 32-person room, against the real `visavis serve`.

The 31 others are the synthetic publishers of ``benchmarks/crowd.py``: real devices
(signed in, identity keys published, end-to-end keys agreed with the browser over
signaling) sending a libvpx clip in three simulcast layers, SFrame-encrypted. The page
answers from its ring view like a person, then, while all 31 publish:

- it shows the tiles that fit the window (16 on a desktop, and "+15") and
  decodes every one of them (frames decoded grow per participant, from getStats), while
  the participants off screen get no video at all (the SFU is told with `layout`);
- the tiles are small, so it names them `thumbnails` and decodes the lowest simulcast
  layer of each (frame height from getStats), not the top one;
- end-to-end encryption holds: frames decrypted, none refused for a bad tag or an
  unknown key once keys are agreed;
- it stays responsive: requestAnimationFrame keeps pacing and clicks on the controls
  reach the screen quickly (Event Timing);
- Chromium (every process of the browser this test launches) stays under the CPU
  budget stated in docs/web.md.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from benchmarks.crowd import LAYERS, Crowd, measure, seed_accounts
from playwright.async_api import Browser

from tests.browser import chromium
from tests.served import SLOW_CLIENTS, Served, serve
from tests.web.clients import open_device, sign_in, signup_rest

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="package")]

HOST = "host@example.com"
DESKTOP = {"width": 1440, "height": 900}
# Budgets (docs/web.md "The 32-person room"): measured on this 2-core machine. CPU is
# CPU time, but a loaded machine starves Chromium (fewer frames decoded, less CPU): the
# budget comes from runs on a lightly loaded machine. With the small tiles as thumbnails
# (the lowest layer decoded) three interleaved runs took 0.49-0.52 cores against
# 0.67-0.76 with every tile at full layers; the highest seen under load was 0.66.
CPU_BUDGET_CORES = 1.0
RAF_P50_BUDGET_MS = 100.0
CLICK_BUDGET_MS = 1000.0
WINDOW_S = 6.0


@pytest.fixture(scope="module")
def crowd_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Served, list[tuple[str, str]]]]:
    """A server of its own, whose store already holds the 31 synthetic accounts and
    devices (benchmarks/crowd.py seed_accounts: 62 password hashes through the API would
    cost ~20 s of CPU), and whose admission limit lets 32 devices agreeing keys at once
    through (the default is 64 requests at once)."""
    data_dir = tmp_path_factory.mktemp("crowd")
    accounts = seed_accounts(data_dir)
    with serve(
        data_dir,
        env={**SLOW_CLIENTS, "VISAVIS_SIGNALING__MAX_CONCURRENT_REQUESTS": "256"},
    ) as served:
        yield served, accounts


@pytest_asyncio.fixture(scope="module", loop_scope="package")
async def own_browser() -> AsyncIterator[Browser]:
    """A Chromium of its own, so that its CPU is this page's alone."""
    async with chromium() as launched:
        yield launched


# The frame height each tile on screen decodes now (the simulcast layer forwarded).
SHOWN_HEIGHTS = """async () => {
  const got = await window.visavis.controller.received();
  return [...document.querySelectorAll("figure.tile[data-participant]")]
    .map((el) => got[el.dataset.participant]?.height ?? 0);
}"""
LOWEST = min(height for _, _, height, _ in LAYERS)


def lowest_only(heights: list[int]) -> bool:
    return len(heights) > 0 and all(h == LOWEST for h in heights)


async def wait_until(page: Any, script: str, check: Any, within: float, what: str) -> Any:
    """Poll ``script`` in the page until ``check(value)`` (bounded); the last value."""
    deadline = time.monotonic() + within
    value = None
    while time.monotonic() < deadline:
        value = await page.evaluate(script)
        if check(value):
            return value
        await page.wait_for_timeout(250)
    raise AssertionError(f"{what}: last seen {value}")


# Setting up 32 devices on a loaded 2-core machine takes minutes (229 s at load 51).
@pytest.mark.timeout(600)
async def test_one_browser_among_31_synthetic_publishers(
    crowd_server: tuple[Served, list[tuple[str, str]]], own_browser: Browser
) -> None:
    server, accounts = crowd_server
    signup_rest(server.http_url, HOST, "Host")
    device = await open_device(own_browser, server.http_url, DESKTOP, max_height=360)
    crowd = Crowd(server.http_url, HOST)
    started = time.monotonic()
    phases: dict[str, float] = {}  # seconds since the start, printed (where CI time goes)

    def phase(name: str) -> None:
        phases[name] = round(time.monotonic() - started, 1)

    try:
        await sign_in(device, HOST, "crowd browser")
        await crowd.sign_in(accounts)
        phase("signed_in")
        await crowd.call()
        page = device.page
        await page.locator("[data-action=answer-video]").click()
        await crowd.join()
        crowd.start()
        phase("crowd_publishing")
        # Every participant in the grid, keys agreed with all 31, every tile decoding.
        await wait_until(
            page,
            "window.visavis.controller?.remotes().length ?? 0",
            lambda n: n == 31,
            60,
            "participants in the room",
        )
        phase("all_in_grid")
        await wait_until(
            page,
            "window.visavis.e2ee.stats().then((s) => s?.peers.length ?? 0)",
            lambda n: n == 31,
            # the page handles the 31 announces one after another, each a ratchet, a
            # signature check and two messages out: at load average 80 that took > 60 s
            180,
            "end-to-end keys agreed",
        )
        phase("keys_agreed")
        shown_decoding = """async () => {
          const got = await window.visavis.controller.received();
          const shown = [...document.querySelectorAll("figure.tile[data-participant] video")]
            .map((v) => v.closest("figure").dataset.participant);
          return shown.length > 0 && shown.every((p) => (got[p]?.video ?? 0) > 3);
        }"""
        await wait_until(page, shown_decoding, bool, 120, "every tile on screen decoding")
        phase("tiles_decoding")
        # Every tile is small (~280 x 170 px; none large: the crowd sends no audio, so no
        # dominant speaker): the page names them all thumbnails, the SFU sends the lowest.
        await wait_until(page, SHOWN_HEIGHTS, lowest_only, 30, "thumbnails at the lowest layer")
        phase("thumbnails_low")
        e2ee_before = await page.evaluate("window.visavis.e2ee.stats()")

        figures = await measure(page, WINDOW_S)
        phase("measured")
        print("phases (s):", phases)
        print("32-person room:", {k: v for k, v in figures.items() if k != "decoded_growth"})

        assert figures["participants"] == 31
        # A desktop grid shows 16 tiles and "+15" (js/core/grid.js MAX_VISIBLE).
        assert figures["tiles_shown"] == 16, figures["shown"]
        assert figures["shown_decoding"] == figures["tiles_shown"], figures["decoded_growth"]
        assert figures["offscreen_decoding"] == 0, figures["decoded_growth"]
        e2ee = await page.evaluate("window.visavis.e2ee.stats()")
        assert e2ee["frames"]["decrypted"] > e2ee_before["frames"]["decrypted"]
        assert not e2ee["alerts"]
        for reason in ("auth", "unknown_kid"):
            grew = e2ee["frames"]["dropped"].get(reason, 0) - e2ee_before["frames"]["dropped"].get(
                reason, 0
            )
            assert grew == 0, (reason, e2ee["frames"]["dropped"])
        heights = await page.evaluate(SHOWN_HEIGHTS)
        assert lowest_only(heights), heights  # still, after the window
        assert figures["browser_cpu_cores"] < CPU_BUDGET_CORES, figures
        assert figures["raf_ms_p50"] < RAF_P50_BUDGET_MS, figures
        assert figures["click_input_to_paint_ms_p50"] < CLICK_BUDGET_MS, figures
        assert not device.errors
    finally:
        await crowd.close()
        await device.close()
