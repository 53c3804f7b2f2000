"""The effects inside the web client, in a real 1:1 call through ``visavis serve``: the
background choice on the home screen is remembered, and the in-call panel switches what
goes out (blur: the effect's track, made in its worker while the call page stays
responsive and the call goes on; off: the raw camera again); reactions from the
keyboard and from the menu play on the sender's picture on both screens and never appear
in a signaling message; voice isolation is on by default with the browser's own
suppression off and its track going out. (What blur does to the frames
is measured in test_video_effect.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from playwright.async_api import expect

from tests.effects import harness
from tests.served import Served
from tests.web.clients import Device, open_device, sign_in, signup_rest

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

ALICE = "alice.effects@example.com"
BOB = "bob.effects@example.com"
# The call page's main thread while blur runs (a 20 ms timer, 95th percentile late): with
# the effect on the main thread the page froze for seconds here (docs/effects.md).
CALL_PAGE_TIMER_LATE_MS = 50.0
# Voice isolation in the call (alice's microphone: speech + pink noise, as sent; what bob
# receives): stated, the noise floor (quietest fifth of 20 ms windows) at least 10 dB below
# the one sent and the speech (loudest quarter) within 6 dB of the speech sent (the
# browser's automatic gain control still acts on the microphone). Measured 45.6 dB lower
# at load 16 (the browser's own suppression, toggle off: 14.7 dB); RNNoise misses its
# deadlines when the machine is crowded (11 dB at load 35 in test_voice_isolation.py).
CALL_NOISE_FLOOR_DROP_DB = 10.0
CALL_SPEECH_KEPT_DB = 6.0
RECEIVE_MS = 6000
RECEIVED_LEVELS = """async (ms) => {
  const { createLevelMeter } = await import("/effects/level-meter.js");
  const ctx = new AudioContext({ sampleRate: 48000 });
  const source = ctx.createMediaStreamSource(window.visavis.store.get().remoteStream);
  const meter = await createLevelMeter(ctx, source, { channels: 1 });
  await new Promise((resolve) => setTimeout(resolve, ms));
  const levels = meter.levels.map((l) => l[0]);
  meter.close();
  await ctx.close();
  return levels;
}"""


def floor_and_speech_db(levels: Any) -> tuple[float, float]:
    """Noise floor (quietest fifth of the windows) and speech (loudest quarter), in dBFS."""
    power = np.asarray(levels, dtype=np.float64) ** 2
    assert len(power) >= 100, "too few 20 ms windows received"
    floor = power[power <= np.percentile(power, 20)]
    speech = power[power >= np.percentile(power, 75)]
    return (
        float(10 * np.log10(max(float(np.mean(floor)), 1e-18))),
        float(10 * np.log10(max(float(np.mean(speech)), 1e-18))),
    )


KINDS = (
    "hearts",
    "thumbs_up",
    "thumbs_down",
    "balloons",
    "confetti",
    "fireworks",
    "rain",
    "lasers",
)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def call_browser(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Any, Path]]:
    """One Chromium for both devices, and the microphone clip it plays (speech + noise)."""
    from playwright.async_api import async_playwright

    if missing := harness.tools_missing():
        pytest.skip(f"missing {missing} (scripts/setup installs them)")
    media = tmp_path_factory.mktemp("media")
    camera, mic = harness.camera_clip(media), harness.microphone_clip(media)
    async with async_playwright() as playwright:
        browser = await harness.launch(
            playwright,
            f"--use-file-for-fake-video-capture={camera}",
            f"--use-file-for-fake-audio-capture={mic}",
        )
        try:
            yield browser, mic
        finally:
            await browser.close()


def watch_signaling(device: Device, sink: list[str]) -> None:
    """Record every WebSocket frame the page sends or receives (signaling, SFU control)."""

    def on_socket(ws: Any) -> None:
        ws.on("framesent", lambda payload: sink.append(str(payload)))
        ws.on("framereceived", lambda payload: sink.append(str(payload)))

    device.page.on("websocket", on_socket)


async def test_effects_in_a_call(server: Served, call_browser: tuple[Any, Path]) -> None:
    browser, microphone = call_browser
    signup_rest(server.http_url, ALICE, "Alice")
    signup_rest(server.http_url, BOB, "Bob")
    alice = await open_device(browser, server.http_url)
    bob = await open_device(browser, server.http_url)
    frames: list[str] = []
    for device in (alice, bob):
        # The machine running CI is shared (load averages of 30-40 seen): every action and
        # wait on these pages may take tens of seconds, so each gets a minute.
        device.page.set_default_timeout(60_000)
    watch_signaling(alice, frames)
    watch_signaling(bob, frames)
    try:
        await sign_in(alice, ALICE, "alice laptop")
        await sign_in(bob, BOB, "bob laptop")

        # Before the call: the home screen's effects choices are remembered on the device.
        settings = alice.page.get_by_role("region", name="Effects")
        await settings.get_by_role("button", name="Portrait").click()
        await expect(settings.get_by_role("button", name="Portrait")).to_have_attribute(
            "aria-pressed", "true", timeout=60_000
        )
        assert (
            await alice.page.evaluate("JSON.parse(localStorage.getItem('visavis.effects')).video")
            == "portrait"
        )
        await settings.get_by_role("button", name="Off").click()

        await alice.find_and_call(BOB)
        await bob.page.get_by_role("button", name="Video", exact=True).click()
        await alice.wait_phase("in_call", within=60)
        await bob.wait_phase("in_call", within=60)
        await bob.wait_frames(10, within=60)

        # Blur switched on inside the call: the effect's worker does the work, so the call
        # page stays responsive and the call goes on; what goes out is the effect's track.
        controls = alice.page.get_by_role("navigation", name="Call controls")
        await controls.get_by_role("button", name="Effects").click()
        panel = alice.page.get_by_role("group", name="Effects")
        await panel.get_by_role("button", name="Blur").click()
        await alice.page.wait_for_function(
            "() => { const v = window.visavis.effects.video;"
            " return v && v.effect.stats.framesOut - v.effect.stats.framesPassedThrough > 30; }",
            timeout=90_000,
        )
        assert await alice.page.evaluate(
            "window.visavis.media.outgoing('video') === window.visavis.effects.video.out"
        )
        latency = await alice.page.evaluate(harness.MAIN_THREAD_LATENCY, 3000)
        effect = await alice.page.evaluate(
            "({...window.visavis.effects.video.effect.stats, recentMs: undefined})"
        )
        print(
            f"blur in the call page: {effect['fps']:.1f} fps at {effect['effectWidth']}x"
            f"{effect['effectHeight']}, main thread timer late p95 {latency['p95']:.1f} ms,"
            f" max {latency['max']:.1f} ms; note: {effect['note']!r}"
        )
        assert not effect["gaveUp"] and effect["error"] is None
        assert latency["p95"] <= CALL_PAGE_TIMER_LATE_MS
        if effect["lowered"]:  # the person is told, in the panel (and the live region)
            await expect(panel.locator(".effects-note")).to_contain_text("effect resolution")
        decoded = await bob.frames_decoded()
        await bob.wait_frames(decoded + 30, within=60)  # the call goes on, blurred
        await panel.get_by_role("button", name="Off").click()
        await alice.page.wait_for_function(
            "() => window.visavis.media.outgoing('video') === window.visavis.media.video"
        )

        # Reactions: Alt+1 (hearts) from alice, fireworks from bob's menu.
        await alice.page.wait_for_function("() => window.visavis.effects.canReact", timeout=60_000)
        await bob.page.wait_for_function("() => window.visavis.effects.canReact", timeout=60_000)
        await alice.page.keyboard.press("Alt+Digit1")
        # Each plays for 2.6 s; what played where is kept in effects.played (the overlay
        # itself is checked frame by frame in test_reactions.py).
        await bob.page.wait_for_function(
            "() => window.visavis.effects.played.some((p) => p.kind === 'hearts')"
        )
        played = await bob.page.evaluate("window.visavis.effects.played")
        assert {"who": "peer", "kind": "hearts", "on": "remote"} in played
        bob_controls = bob.page.get_by_role("navigation", name="Call controls")
        await bob_controls.get_by_role("button", name="React").click()
        await bob.page.get_by_role("menuitem", name="Fireworks").click()
        await alice.page.wait_for_function(
            "() => window.visavis.effects.played.some((p) => p.kind === 'fireworks')",
            timeout=60_000,
        )
        played = await alice.page.evaluate("window.visavis.effects.played")
        assert {"who": "peer", "kind": "fireworks", "on": "remote"} in played
        assert {"who": "self", "kind": "hearts", "on": "self mirror"} in played
        assert await alice.page.evaluate("window.visavis.effects.reactions.stats.received") == 1
        assert await bob.page.evaluate("window.visavis.effects.reactions.stats.received") == 1

        # Voice isolation: on by default, the browser's suppression off, RNNoise's track out.
        # The predicates read `media.audio` with `?.` (no microphone yet reads as "not yet")
        # and wait for the final state: a reopen (setVoiceIsolation) takes a moment.
        await alice.page.wait_for_function(
            "() => window.visavis.media.audio?.getSettings().noiseSuppression === false"
            " && window.visavis.media.outgoing('audio')"
            " === window.visavis.effects.voice?.isolation?.track",
            timeout=60_000,
        )
        await expect(panel.get_by_label("Voice isolation")).to_be_checked()
        # What bob receives with it on, then with alice's toggle off (the microphone then
        # reopened with the browser's own suppression, the raw track out).
        received_on = await bob.page.evaluate(RECEIVED_LEVELS, RECEIVE_MS)
        await panel.get_by_label("Voice isolation").uncheck()
        await alice.page.wait_for_function(
            "() => window.visavis.media.audio?.getSettings().noiseSuppression === true"
            " && window.visavis.media.outgoing('audio') === window.visavis.media.audio",
            timeout=60_000,
        )
        received_off = await bob.page.evaluate(RECEIVED_LEVELS, RECEIVE_MS)
        sent = harness.wav_levels(microphone)
        on_floor, on_speech = floor_and_speech_db(received_on)
        off_floor, off_speech = floor_and_speech_db(received_off)
        sent_floor, sent_speech = floor_and_speech_db(sent)
        print(
            f"voice isolation in the call: noise floor sent {sent_floor:.1f}, received with"
            f" ours {on_floor:.1f}, with the browser's {off_floor:.1f} dBFS; speech sent"
            f" {sent_speech:.1f}, received {on_speech:.1f} / {off_speech:.1f} dBFS"
        )
        assert sent_floor - on_floor >= CALL_NOISE_FLOOR_DROP_DB
        assert on_speech - sent_speech >= -CALL_SPEECH_KEPT_DB

        # Toggled again while the microphone is still reopening (a double click): the end
        # state follows the last choice, its microphone opened to match, and the sender
        # never goes without a track meanwhile.
        await alice.page.evaluate(
            "() => { const e = window.visavis.effects, m = window.visavis.media;"
            " window.__sentNull = false;"
            " for (const s of m.senders) { const r = s.replaceTrack.bind(s);"
            "   s.replaceTrack = (t) => {"
            "     if (t === null) window.__sentNull = true; return r(t); }; }"
            " e.setVoiceIsolation(true); e.setVoiceIsolation(false); e.setVoiceIsolation(true); }"
        )
        await alice.page.wait_for_function(
            "() => window.visavis.media.audio?.getSettings().noiseSuppression === false"
            " && window.visavis.media.outgoing('audio')"
            " === window.visavis.effects.voice?.isolation?.track"
            " && [...window.visavis.media.senders].some((s) => s.track"
            "    === window.visavis.effects.voice.isolation.track)",
            timeout=60_000,
        )
        assert not await alice.page.evaluate("window.__sentNull")

        # Spatial audio is off in a 1:1 call (one voice belongs in the middle).
        assert not await alice.page.evaluate("window.visavis.effects.spatialActive")

        # Nothing about the reactions passed through signaling.
        assert frames, "no signaling frames were seen at all"
        for payload in frames:
            for kind in KINDS:
                assert kind not in payload, f"{kind} in a signaling frame: {payload[:200]}"

        await alice.page.get_by_role("button", name="End").click()
        await bob.wait_phase("idle", within=20)
        assert alice.errors == [] and bob.errors == []
    finally:
        await alice.close()
        await bob.close()
