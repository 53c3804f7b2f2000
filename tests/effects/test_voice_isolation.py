"""Voice isolation (effects/voice.js): a fake microphone playing espeak-ng speech mixed with
pink noise is sent through a real peer connection twice, through the effect switched on and
switched off; on the receiving side the noise floor drops by a stated number of dB and the
speech keeps its level. The browser's own noise suppression is off while ours is on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.effects import harness

pytestmark = pytest.mark.browser

# Stated: the received noise floor (the quietest fifth of 20 ms windows) at least 8 dB
# lower with voice isolation on. Measured 26-28 dB at load averages up to 15 and 11 dB at
# 30-40 on this shared 2-core machine (the worklet then misses its deadlines).
NOISE_FLOOR_DROP_DB = 8.0
SPEECH_KEPT_DB = -3.0  # stated: speech windows within 3 dB of the speech that was sent


def power_db(power: Any) -> float:
    return float(10 * np.log10(max(float(np.mean(power)), 1e-18)))


async def test_noise_floor_drops_speech_kept(
    playwright: Any, web_origin: str, tmp_path: Path, csp: str
) -> None:
    if missing := harness.tools_missing():
        pytest.skip(f"missing {missing} (scripts/setup installs them)")
    mic = harness.microphone_clip(tmp_path)
    browser = await harness.launch(playwright, f"--use-file-for-fake-audio-capture={mic}")
    try:
        context = await browser.new_context()
        page = await harness.open_harness(context, web_origin, "voice.html", csp)
        result = await page.evaluate("run(6000)")  # half the ~12 s clip: speech and pauses
        assert result["micSettings"]["noiseSuppression"] is False
        assert result["on"]["browserNoiseSuppression"] is False
        levels = np.asarray(result["levels"], dtype=np.float64)
        assert levels.shape[0] >= 200  # 20 ms windows: at least 4 s received
        on, off = levels[:, 0] ** 2, levels[:, 1] ** 2
        # Each branch's floor from its own quietest fifth (the two arrive through separate
        # jitter buffers and RNNoise's frames: not sample-aligned).
        quiet_on = on <= np.percentile(on, 20)
        quiet_off = off <= np.percentile(off, 20)
        floor_on, floor_off = power_db(on[quiet_on]), power_db(off[quiet_off])
        speech = off >= np.percentile(off, 75)  # the loudest quarter: speech over the noise
        speech_on = power_db(on[speech])
        speech_sent = power_db(max(float(np.mean(off[speech]) - np.mean(off[quiet_off])), 1e-18))
        print(
            f"noise floor {floor_off:.1f} -> {floor_on:.1f} dBFS "
            f"({floor_off - floor_on:.1f} dB lower); "
            f"speech {speech_sent:.1f} -> {speech_on:.1f} dBFS"
        )
        assert floor_off - floor_on >= NOISE_FLOOR_DROP_DB
        assert speech_on - speech_sent >= SPEECH_KEPT_DB

        toggled = await page.evaluate("toggle()")
        assert toggled["disabled"]["enabled"] is False
        assert toggled["enabled"]["enabled"] is True
        assert toggled["enabled"]["browserNoiseSuppression"] is False
        assert page.harness_errors == []
    finally:
        await browser.close()
