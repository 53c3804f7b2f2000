"""Background blur and portrait (effects/video.js) on a fake camera showing a person in front
of a detailed background: the background's high-frequency energy drops, the person stays as
the camera saw them, the frame rate holds at 640x480 on software GL, and "off" passes frames
through untouched. Both frame paths: insertable streams (Chromium) and canvas capture (the
Firefox/Safari path, forced here).

When the device cannot keep up, the effect lowers its own resolution (never the call's frame
rate) and says so. When the segmentation runtime cannot run (no WebGL, a model that never
arrives), it gives up, says why, and passes the camera through (the client then sends the
camera's own track: tests/web/test_firefox.py, where headless Firefox has no WebGL)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from tests.effects import harness

pytestmark = pytest.mark.browser

# Boxes (x0, y0, x1, y1) in the 640x480 clip: the top 512x384 of astronaut.png scaled 1.25.
FLAG = (0, 0, 90, 260)
SHUTTLE = (455, 10, 570, 300)
FACE = (240, 80, 330, 220)
SUIT = (200, 380, 400, 470)
# Stated thresholds (docs/effects.md quotes the measured values).
BLUR_BACKGROUND_DROP = 10.0  # background high-frequency energy at least 10x lower
PORTRAIT_BACKGROUND_DROP = 3.0
PERSON_KEPT = 0.8  # person's high-frequency energy at least 80 % of the camera's
PERSON_MAX_DIFF = 8.0  # mean absolute difference in the person's region, 0..255
# At 640x480 the effect delivers the camera's 30 fps here when the machine is not crowded
# (docs/effects.md); the test runs beside other jobs on 2 cores (load averages of 20-40
# seen), so it asserts 10 fps: above what the effect gives without adapting (5 fps at
# full effect resolution), so a broken adaptation still fails it.
MIN_FPS = 10.0
# The page's main thread meanwhile: a 20 ms timer runs at most this late (95th percentile,
# in the least disturbed of three windows).
# The effect on the main thread cost 20-40 ms a frame at 30 fps here, which alone made
# timers wait that long; in its worker the page's thread stays idle.
MAX_TIMER_LATE_MS = 15.0


def high_frequency(frame: NDArray[np.uint8], box: tuple[int, int, int, int]) -> float:
    """Mean squared Laplacian of the luma in ``box``: fine detail, which a blur removes."""
    x0, y0, x1, y1 = box
    rgb = frame[y0:y1, x0:x1, :3].astype(np.float64)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    lap = 4 * luma[1:-1, 1:-1] - luma[:-2, 1:-1] - luma[2:, 1:-1] - luma[1:-1, :-2] - luma[1:-1, 2:]
    return float(np.mean(lap**2))


def mean_diff(a: NDArray[np.uint8], b: NDArray[np.uint8], box: tuple[int, int, int, int]) -> float:
    x0, y0, x1, y1 = box
    return float(np.mean(np.abs(a[y0:y1, x0:x1, :3].astype(int) - b[y0:y1, x0:x1, :3])))


def assert_effect(
    camera: NDArray[np.uint8], out: NDArray[np.uint8], drop: float
) -> dict[str, float]:
    figures = {}
    for name, box in (("flag", FLAG), ("shuttle", SHUTTLE)):
        ratio = high_frequency(camera, box) / max(high_frequency(out, box), 1e-9)
        figures[name] = ratio
        assert ratio >= drop, f"{name}: background detail dropped only {ratio:.1f}x"
    for name, box in (("face", FACE), ("suit", SUIT)):
        kept = high_frequency(out, box) / high_frequency(camera, box)
        diff = mean_diff(camera, out, box)
        figures[name] = kept
        assert kept >= PERSON_KEPT, f"{name}: only {kept:.2f} of the detail kept"
        assert diff <= PERSON_MAX_DIFF, f"{name}: differs by {diff:.1f} on average"
    return figures


async def grab_pair(page: Any) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    camera = harness.rgba(await page.evaluate("grabCamera()"))
    out = harness.rgba(await page.evaluate("grabOutput()"))
    assert camera.shape == out.shape == (480, 640, 4)
    return camera, out


async def test_blur_portrait_off(
    playwright: Any, web_origin: str, tmp_path: Path, csp: str
) -> None:
    async with harness.camera_context(playwright, harness.camera_clip(tmp_path)) as context:
        page = await harness.open_harness(context, web_origin, "video.html", csp)
        started = await page.evaluate("start('blur')")
        assert started["backend"] == "insertable-streams"
        assert started["settings"]["width"] == 640 and started["settings"]["height"] == 480

        settled = await page.evaluate("settledFps(3000, 6)")
        print(f"blur at 640x480: {settled['fps']:.1f} fps, {settled['stats']}")
        assert settled["fps"] >= MIN_FPS
        assert settled["stats"]["error"] is None
        # The page stays responsive: segmentation and compositing run in the effect's worker.
        # The least disturbed of three 3 s windows: other jobs' bursts on this shared
        # machine delay timers in one window (p95 30 ms seen once at load 20), while an
        # effect on the page's thread would delay every window.
        windows = [await page.evaluate(harness.MAIN_THREAD_LATENCY, 3000) for _ in range(3)]
        p95 = min(w["p95"] for w in windows)
        print(f"main thread: a 20 ms timer late by p95 {[round(w['p95'], 1) for w in windows]}")
        assert p95 <= MAX_TIMER_LATE_MS
        camera, out = await grab_pair(page)
        print("blur", assert_effect(camera, out, BLUR_BACKGROUND_DROP))

        await page.evaluate("setMode('portrait')")
        effected = "stats().framesOut - stats().framesPassedThrough"
        n = await page.evaluate(effected)
        await page.evaluate(f"waitFor(() => {effected} > {n + 5})")
        camera, out = await grab_pair(page)
        print("portrait", assert_effect(camera, out, PORTRAIT_BACKGROUND_DROP))

        await page.evaluate("setMode('off')")
        passed = await page.evaluate("stats().framesPassedThrough")
        await page.evaluate(f"waitFor(() => stats().framesPassedThrough > {passed + 3})")
        camera, out = await grab_pair(page)
        assert mean_diff(camera, out, (0, 0, 640, 480)) < 1.0  # untouched
        assert page.harness_errors == []
        await page.close()

        # The canvas captureStream path (what Firefox and Safari run).
        page = await harness.open_harness(context, web_origin, "video.html", csp)
        started = await page.evaluate("start('blur', {backend: 'canvas'})")
        assert started["backend"] == "canvas"
        camera, out = await grab_pair(page)
        print("canvas path", assert_effect(camera, out, BLUR_BACKGROUND_DROP))
        assert page.harness_errors == []


# Started at its full resolution (640x480) the effect costs 88-115 ms a frame here (docs/
# effects.md, benchmarks/effects.py), three times the camera's 33 ms frame interval: its
# first resolution decision (after 5 warm-up and 30 measured frames) must lower it.
LOWERED = re.compile(
    r"^effect resolution lowered to \d+\u00d7\d+(, person mask every \d frames)? to keep 30 fps "
    r"\(the call's frame rate is unchanged\)$"
)


async def test_lowers_its_resolution_rather_than_the_frame_rate_and_says_so(
    playwright: Any, web_origin: str, tmp_path: Path, csp: str
) -> None:
    async with harness.camera_context(playwright, harness.camera_clip(tmp_path)) as context:
        page = await harness.open_harness(context, web_origin, "video.html", csp)
        started = await page.evaluate("start('blur', {level: 0})")
        assert started["effectWidth"] == 640 and started["level"] == 0

        await page.evaluate(
            "waitFor(() => statuses.some((s) => s.note.includes('lowered')), 60000)"
        )
        said = next(s for s in await page.evaluate("statuses") if "lowered" in s["note"])
        print(f"said: {said['note']!r} at {said['msPerFrame']:.1f} ms per frame")
        assert LOWERED.match(said["note"]), said["note"]
        assert said["lowered"] and said["level"] >= 1 and not said["gaveUp"]
        # What it says is what it did: the next effected frames are smaller.
        effected = "stats().framesOut - stats().framesPassedThrough"
        n = await page.evaluate(effected)
        await page.evaluate(f"waitFor(() => {effected} > {n + 5})")
        now = await page.evaluate("stats()")
        assert now["effectWidth"] < 640 and now["effectHeight"] < 480, now

        # ... and the frame rate holds (frames are never dropped to save work).
        settled = await page.evaluate("settledFps(3000, 6)")
        print(
            f"settled at {settled['stats']['effectWidth']}x{settled['stats']['effectHeight']}:"
            f" {settled['fps']:.1f} fps"
        )
        assert settled["fps"] >= MIN_FPS
        assert settled["stats"]["mode"] == "blur" and settled["stats"]["error"] is None
        assert page.harness_errors == []


async def test_gives_up_when_its_runtime_cannot_run_and_passes_the_camera_through(
    playwright: Any, web_origin: str, tmp_path: Path, csp: str
) -> None:
    """No WebGL (what headless Firefox here gives a worker; Chromium with no GPU and no
    software rasterizer):
    the effect gives up at once, on both frame paths, and says why. A model download that
    never completes: it gives up after ``startMs`` with the camera's frames passing
    through meanwhile."""
    clip = harness.camera_clip(tmp_path)
    # --disable-gpu (always) with no software rasterizer: no WebGL anywhere (--disable-webgl
    # alone still gives a worker's OffscreenCanvas one here).
    async with harness.camera_context(playwright, clip, "--disable-software-rasterizer") as context:
        for backend in ("insertable-streams", "canvas"):
            page = await harness.open_harness(context, web_origin, "video.html", csp)
            await page.evaluate(f"begin('blur', {{backend: '{backend}'}})")
            await page.evaluate("waitFor(() => stats().gaveUp, 30000)")
            stats = await page.evaluate("stats()")
            print(f"{backend}, no WebGL: {stats['note']!r}")
            assert stats["backend"] == backend and stats["mode"] == "off"
            assert stats["note"] == (
                "background effects unavailable: this browser gives it no WebGL"
            )
            assert not stats["modelReady"]
            gave_up = [s for s in await page.evaluate("statuses") if s["gaveUp"]]
            assert len(gave_up) == 1, gave_up  # said once
            passed = stats["framesPassedThrough"]
            await page.evaluate(f"waitFor(() => stats().framesPassedThrough > {passed + 3})")
            if backend == "insertable-streams":  # (grab reads tracks with a processor)
                cam, out = await grab_pair(page)
                assert mean_diff(cam, out, (0, 0, 640, 480)) < 1.0  # the camera, untouched
            assert page.harness_errors == []
            await page.close()

    async with harness.camera_context(playwright, clip) as context:
        held: list[Any] = []  # the runtime's and the model's requests, never answered

        async def hold(route: Any) -> None:
            held.append(route)

        for pattern in ("**/selfie_segmentation*.wasm", "**/selfie_segmentation*.tflite"):
            await context.route(pattern, hold)
        page = await harness.open_harness(context, web_origin, "video.html", csp)
        await page.evaluate("begin('blur', {startMs: 3000})")
        await page.evaluate("waitFor(() => stats().gaveUp, 30000)")
        stats = await page.evaluate("stats()")
        print(f"runtime never arrives ({len(held)} requests held): {stats['note']!r}")
        assert stats["note"] == (
            "background effects unavailable: no frame came out of the effect in 3 s"
        )
        assert not stats["modelReady"] and stats["mode"] == "off"
        assert stats["framesPassedThrough"] == stats["framesOut"] > 10  # 3 s of camera
        for route in held:
            await route.abort()
        assert page.harness_errors == []
