"""What headless Firefox ESR can measure of the browser effects (docs/effects.md, "Browser
support"): it has no WebGL and no running AudioContext here, but it renders audio
offline and draws on canvases.

Run: ``.venv/bin/python benchmarks/effects_firefox.py`` (``--runs 3`` by default). It
serves ``src/visavis/web`` with the product's Content-Security-Policy and the harness pages
of tests/effects/pages beside it (as the Chromium benchmark's Playwright routing does) and
opens bench.html in Firefox (tests/firefox.py, WebDriver BiDi):

- voice isolation: RNNoise's ms of CPU per 10 ms of 48 kHz audio in Firefox's
  AudioWorklet (offline rendering, minus the bare graph), and the level of steady noise
  in and out (the drop says the model runs, not just the graph);
- spatial audio: ms per 10 ms of audio per voice (stereo panning, HRTF; 8 voices), and
  how much louder the left channel is for a voice placed on the left;
- reactions: median ms to draw one frame of each animation on a 640x360 canvas;
- the video effect's canvas path with the effect off (what Firefox sends while an effect
  loads): frames per second through the worker and back, and how late a 20 ms timer runs
  on the page meanwhile; and, blur switched on, how long until it gives up and why.

Every figure is the median of the runs. The machine is shared (2 cores, other jobs
running): quote the load average printed with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser import static_site  # noqa: E402
from tests.effects import harness  # noqa: E402
from tests.firefox import Tab, launch_firefox  # noqa: E402

from visavis.signaling.web import CSP, WEB_DIR  # noqa: E402

JOB_WAIT = 600.0  # one figure's bound (the page computes it; we poll for the answer)


def site(root: Path) -> Path:
    """A directory that serves the web client at / and the harness pages at /__effects__/."""
    for entry in WEB_DIR.iterdir():
        (root / entry.name).symlink_to(entry)
    (root / harness.HARNESS_PREFIX.strip("/")).symlink_to(harness.PAGES)
    return root


async def job(tab: Tab, call: str) -> Any:
    """Run ``call`` (a bench.js function) in the page and wait for its result, bounded:
    a single BiDi command may wait only 60 s."""
    await tab.eval(
        f"(window.__job = {call}.then((r) => ({{ok: r}}), (e) => ({{error: String(e)}})),"
        " window.__job.then((r) => (window.__done = r)), true)"
    )
    result = await tab.wait_for("window.__done", within=JOB_WAIT, what=call)
    await tab.eval("(window.__done = null, true)")
    if "error" in result:
        raise RuntimeError(f"{call}: {result['error']}")
    return result["ok"]


async def one_run(tab: Tab, quick: bool) -> dict[str, Any]:
    seconds = 5 if quick else 20
    return {
        "voice": await job(tab, f"voice({seconds})"),
        "noise": await job(tab, f"noiseDrop({seconds})"),
        "spatial": await job(tab, f"spatial({seconds}, 8)"),
        "panning": await job(tab, "panning(2)"),
        "reactions": await job(tab, f"reactions({60 if quick else 240})"),
        "canvas": await job(tab, f"canvasPath({3000 if quick else 10000})"),
        "blur": await job(tab, "blurGivesUp()"),
    }


def med(values: list[float]) -> float:
    return statistics.median(values)


def report(runs: list[dict[str, Any]], version: str) -> None:
    print(
        f"\nFirefox {version}, medians of {len(runs)} run(s); load average {os.getloadavg()}"
        f" on {os.cpu_count()} cores"
    )
    voice = med([r["voice"]["msPer10ms"] for r in runs])
    drop = med([r["noise"]["inDb"] - r["noise"]["outDb"] for r in runs])
    levels = [f"{r['noise']['inDb']:.1f} -> {r['noise']['outDb']:.1f}" for r in runs]
    print(
        f"voice isolation (RNNoise): {voice:.3f} ms per 10 ms of audio; white noise"
        f" {', '.join(levels)} dBFS (median {drop:.1f} dB lower)"
    )
    stereo = med([r["spatial"]["stereo"] for r in runs])
    hrtf = med([r["spatial"]["hrtf"] for r in runs])
    print(f"spatial audio per voice: stereo {stereo:.4f}, HRTF {hrtf:.4f} ms per 10 ms of audio")
    left = {k: med([r["panning"][k] for r in runs]) for k in ("stereo", "hrtf")}
    print(
        f"a voice on the left: left channel +{left['stereo']:.2f} dB (stereo),"
        f" +{left['hrtf']:.2f} dB (HRTF)"
    )
    print("reactions: ms to draw one frame on a 640x360 canvas")
    for kind in runs[0]["reactions"]:
        print(f"  {kind:12} {med([r['reactions'][kind] for r in runs]):.2f}")
    fps = med([r["canvas"]["fps"] for r in runs])
    late = med([r["canvas"]["timerLateP95"] for r in runs])
    print(
        f"canvas path, effect off ({runs[-1]['canvas']['camera']} camera): {fps:.1f} fps,"
        f" page timer late p95 {late:.1f} ms"
    )
    gave_up = med([r["blur"]["ms"] for r in runs])
    print(
        f"blur: gave up after {gave_up:.0f} ms ({runs[-1]['blur']['backend']} path):"
        f" {runs[-1]['blur']['note']!r}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="shorter figures")
    parser.add_argument("--json", action="store_true", help="print the raw runs as JSON too")
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "site"
        root.mkdir()
        site(root)
        with static_site(root, headers={"content-security-policy": CSP}) as origin:
            # full-resolution performance.now() (Firefox coarsens it to 1 ms by default,
            # which rounds a reaction frame to 0)
            prefs = {"privacy.reduceTimerPrecision": False}
            async with launch_firefox(Path(tmp) / "firefox", prefs) as firefox:
                for i in range(args.runs):
                    print(f"run {i + 1} ...", flush=True)
                    tab = await firefox.new_tab(f"{origin}{harness.HARNESS_PREFIX}bench.html")
                    await tab.wait_for("typeof window.blurGivesUp === 'function'", 60)
                    runs.append(await one_run(tab, args.quick))
                    report(runs, firefox.version)
                    if tab.errors or firefox.errors:
                        print(f"console errors: {tab.errors + firefox.errors}")
    if args.json:
        print(json.dumps(runs, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
