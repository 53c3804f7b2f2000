"""Reactions and spatial audio in a real group call: three people through ``visavis serve``
(signaling and its SFU), each in their own browser profile; two speak (espeak-ng speech as
their fake microphones), the third listens.

- Reactions: one from the keyboard and one from the menu play on the sender's tile on the
  others' screens (and on the sender's own self view); they travel sealed, end to end,
  through signaling (``call.reaction``), so no reaction name appears in any signaling or
  SFU WebSocket frame, and the SFU carries none at all. They are sealed with the call's
  end-to-end keys (the E2EE layer's ``app.e2ee.seal``/``open``, the sender's current
  SFrame key), which the signaling and the SFU never have.
- Spatial audio: the listener's grid has the two speakers side by side; in the listener's
  stereo output, while only the left one speaks the left channel is louder, and while only
  the right one speaks the right one is. The headphones toggle switches to HRTF.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from playwright.async_api import expect

from tests.effects import harness
from tests.effects.test_client_effects import KINDS, watch_signaling
from tests.served import Served
from tests.waiting import until_async
from tests.web.clients import Device, open_device, sign_in, signup_rest

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

PEOPLE = {"ann.fx@example.com": "Ann", "ben.fx@example.com": "Ben", "cat.fx@example.com": "Cat"}
MIN_SIDE_DB = 3.0  # stated: the speaker's side at least 3 dB louder than the other side
MEASURE_MS = 10000

# This device decodes (end-to-end encrypted) video from both others.
DECODING_BOTH = """async () => Object.values(await window.visavis.controller.received())
  .filter((p) => p.video >= 5).length >= 2"""

# The listener's mix, left and right, and each voice before it is placed, metered together
# (one worklet, so the 20 ms windows line up): [left, right, voice A, voice B] per window.
METER = """async ([a, b, ms]) => {
  const { createLevelMeter } = await import("/effects/level-meter.js");
  const fx = window.visavis.effects;
  const ctx = fx.audioContext;
  const merge = ctx.createChannelMerger(4);
  const split = ctx.createChannelSplitter(2);
  fx.mixer.output.connect(split);
  split.connect(merge, 0, 0);
  split.connect(merge, 1, 1);
  fx.mixer.input(a).connect(merge, 0, 2);
  fx.mixer.input(b).connect(merge, 0, 3);
  const meter = await createLevelMeter(ctx, merge, { channels: 4 });
  await new Promise((resolve) => setTimeout(resolve, ms));
  const levels = [...meter.levels];
  meter.close();
  fx.mixer.output.disconnect(split);
  fx.mixer.input(a).disconnect(merge);
  fx.mixer.input(b).disconnect(merge);
  return levels;
}"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browsers(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Any, Any]]:
    """Two Chromiums: Ann (listening) and Ben share one, Cat has the other; Ben and Cat
    speak at different moments of their (looping) clips."""
    from playwright.async_api import async_playwright

    if missing := harness.tools_missing():
        pytest.skip(f"missing {missing} (scripts/setup installs them)")
    media = tmp_path_factory.mktemp("group-media")
    ben = harness.speech_clip(media, "ben", "Ben is speaking from the left side now.", 0.2, 3.5)
    cat = harness.speech_clip(media, "cat", "And Cat answers from the other side.", 2.0, 1.7)
    async with async_playwright() as playwright:
        first = await harness.launch(playwright, f"--use-file-for-fake-audio-capture={ben}")
        second = await harness.launch(playwright, f"--use-file-for-fake-audio-capture={cat}")
        try:
            yield first, second
        finally:
            await first.close()
            await second.close()


def side_db(left: float, right: float) -> float:
    return 10 * math.log10(max(left, 1e-18) / max(right, 1e-18))


def sides(levels: Any, me: int, other: int) -> tuple[float, int]:
    """dB by which the left channel is louder than the right in the windows where voice
    ``me`` speaks (at least 10 dB above voice ``other``), and how many windows those are."""
    w = np.asarray(levels, dtype=np.float64)
    speaking = (w[:, me] > 0.003) & (w[:, me] > 3.16 * w[:, other])
    left, right = float(np.sum(w[speaking, 0] ** 2)), float(np.sum(w[speaking, 1] ** 2))
    return side_db(left, right), int(np.sum(speaking))


async def played(device: Device, kind: str) -> list[dict[str, Any]]:
    await device.page.wait_for_function(
        "k => window.visavis.effects.played.some((p) => p.kind === k)", arg=kind
    )
    result: list[dict[str, Any]] = await device.page.evaluate("window.visavis.effects.played")
    return [p for p in result if p["kind"] == kind]


async def test_reactions_and_spatial_audio_in_a_group_call(
    server: Served, browsers: tuple[Any, Any]
) -> None:
    for handle, name in PEOPLE.items():
        signup_rest(server.http_url, handle, name)
    first, second = browsers
    ann = await open_device(first, server.http_url, max_height=360)
    ben = await open_device(first, server.http_url, max_height=360)
    cat = await open_device(second, server.http_url, max_height=360)
    devices = [ann, ben, cat]
    frames: list[str] = []
    for device in devices:
        device.page.set_default_timeout(60_000)  # a shared, loaded machine
        watch_signaling(device, frames)
    try:
        for device, (handle, name) in zip(devices, PEOPLE.items(), strict=True):
            await sign_in(device, handle, f"{name}'s laptop")
        handles = list(PEOPLE)
        await ann.page.get_by_label("Handles, separated by commas").fill(", ".join(handles[1:]))
        await ann.page.get_by_role("button", name="Call all").click()
        for device in (ben, cat):
            await expect(device.page.get_by_role("heading", name="Ann")).to_be_visible()
            await device.page.get_by_role("button", name="Video", exact=True).click()
        for device in devices:
            await device.wait_phase("in_call", within=60)
            await expect(device.page.locator(".tile")).to_have_count(2, timeout=60_000)
        ann_id, ben_id, cat_id = [
            await (
                await device.page.wait_for_function(
                    "() => window.visavis.controller?.participantId"
                )
            ).json_value()
            for device in devices
        ]

        # Reactions, once everyone has everyone's keys (their SFrame media decodes): Alt+1
        # from Ann, the menu from Cat.
        t0 = time.monotonic()
        for device in devices:
            page = device.page
            await until_async(lambda p=page: p.evaluate(DECODING_BOTH), "decoding both", 90)
            await device.page.wait_for_function("() => window.visavis.effects.canReact")
        print(f"everyone decodes everyone {time.monotonic() - t0:.1f} s after joining")
        await ann.page.keyboard.press("Alt+Digit1")
        for device in (ben, cat):
            [hearts] = await played(device, "hearts")
            assert hearts["who"] == ann_id and hearts["on"].startswith("tile"), hearts
        assert (await played(ann, "hearts"))[0] == {
            "who": "self",
            "kind": "hearts",
            "on": "self mirror",
        }
        controls = cat.page.get_by_role("navigation", name="Call controls")
        await controls.get_by_role("button", name="React").click()
        await cat.page.get_by_role("menuitem", name="Fireworks").click()
        for device in (ann, ben):
            [fireworks] = await played(device, "fireworks")
            assert fireworks["who"] == cat_id and fireworks["on"].startswith("tile"), fireworks
        for device in devices:
            stats = await device.page.evaluate("window.visavis.effects.reactions.stats")
            assert sum(stats["dropped"].values()) == 0, stats

        # Spatial audio at Ann's: Ben and Cat side by side, each voice from its tile's side.
        await ann.page.wait_for_function(
            "([b, c]) => { const m = window.visavis.effects.mixer;"
            " return m && m.input(b) && m.input(c); }",
            arg=[ben_id, cat_id],
        )
        positions = await ann.page.evaluate("window.visavis.effects.mixer.positions()")
        left, right = sorted((ben_id, cat_id), key=lambda p: positions[p])
        assert positions[left] < -0.3 and positions[right] > 0.3, positions
        levels = await ann.page.evaluate(METER, [left, right, MEASURE_MS])
        left_db, left_n = sides(levels, 2, 3)
        right_db, right_n = sides(levels, 3, 2)
        print(
            f"spatial audio in a group call: left speaker {left_db:+.1f} dB ({left_n} windows),"
            f" right speaker {right_db:+.1f} dB ({right_n} windows) left over right"
        )
        assert left_n >= 15 and right_n >= 15, (left_n, right_n)  # each spoke alone, 0.3 s+
        assert left_db >= MIN_SIDE_DB
        assert right_db <= -MIN_SIDE_DB

        # The headphones toggle (HRTF; its acoustics are measured in test_spatial_audio.py).
        await (
            ann.page.get_by_role("navigation", name="Call controls")
            .get_by_role("button", name="Effects")
            .click()
        )
        await ann.page.get_by_label("I'm wearing headphones").check()
        assert await ann.page.evaluate("window.visavis.effects.mixer.state.headphones")

        # End to end: reactions crossed signaling as call.reaction, sealed; no reaction name
        # in any frame of any device's signaling or SFU control socket.
        relayed = [f for f in frames if '"call.reaction"' in f]
        assert len(relayed) >= 4, "2 sent, each relayed to 2 devices"
        for payload in frames:
            for kind in KINDS:
                assert kind not in payload, f"{kind} in a WebSocket frame: {payload[:200]}"

        await ann.page.get_by_role("button", name="End").click()
        for device in devices:
            assert device.errors == [], device.errors
    finally:
        for device in devices:
            await device.close()
