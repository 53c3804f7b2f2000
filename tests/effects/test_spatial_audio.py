"""Spatial audio (effects/spatial.js): two remote speakers, received over a real peer
connection, sit on the left and right tiles of a grid; the left one is louder in the left
channel and the right one in the right, on speakers (stereo panning) and on headphones
(HRTF); with spatial audio off (a 1:1 call) both channels are equal; when the tiles swap,
the voices follow."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.effects import harness

pytestmark = pytest.mark.browser

MIN_SIDE_DB = 3.0  # stated: the near channel at least 3 dB louder than the far one


def side_db(level: dict[str, float]) -> float:
    """How much louder the left channel is than the right, in dB."""
    return 20 * math.log10(max(level["left"], 1e-9) / max(level["right"], 1e-9))


async def test_voices_follow_their_tiles(playwright: Any, web_origin: str, csp: str) -> None:
    browser = await harness.launch(playwright)
    try:
        context = await browser.new_context()
        page = await harness.open_harness(context, web_origin, "spatial.html", csp)
        positions = await page.evaluate("run()")
        assert positions["ann"] < -0.3 < 0.3 < positions["bob"], positions

        for headphones in (False, True):
            await page.evaluate(f"setHeadphones({str(headphones).lower()})")
            levels = await page.evaluate("measure()")
            ann, bob = levels["ann"], levels["bob"]
            print(f"headphones={headphones}: ann {side_db(ann):+.1f}, bob {side_db(bob):+.1f} dB")
            assert min(ann["left"], bob["right"]) > 0.01  # the voices are heard at all
            assert side_db(ann) >= MIN_SIDE_DB
            assert side_db(bob) <= -MIN_SIDE_DB

        await page.evaluate("swapTiles()")
        await page.evaluate("waitFor(() => positions().ann > 0.3 && positions().bob < -0.3)")
        levels = await page.evaluate("measure()")
        assert side_db(levels["ann"]) <= -MIN_SIDE_DB  # ann's tile is now on the right
        assert side_db(levels["bob"]) >= MIN_SIDE_DB

        await page.evaluate("setEnabled(false)")
        levels = await page.evaluate("measure()")
        print(
            f"spatial off: ann {side_db(levels['ann']):+.1f}, bob {side_db(levels['bob']):+.1f} dB"
        )
        assert abs(side_db(levels["ann"])) < 0.5 and abs(side_db(levels["bob"])) < 0.5
        assert page.harness_errors == []
    finally:
        await browser.close()
