"""Cost of each browser effect per frame, in headless Debian Chromium (software GL).

Run: ``.venv/bin/python benchmarks/effects.py`` (``--runs 3`` by default; ``--quick``:
fewer frames per figure; the medians so far are printed after each run). It runs the
real ``visavis serve`` (tests/served.py), as the tests do, and opens
tests/effects/pages/bench.html on its origin with the astronaut clip as the fake camera:

- blur and portrait at 640x480, at every effect level (effect resolution, mask rate)
  with the adaptation pinned: median ms per frame (segmentation + compositing, in the
  effect's worker: on this Chromium path the page's main thread does nothing per frame),
  the model's share (segmentation alone, for the last mask made) and the frames per second
  delivered;
- voice isolation: RNNoise's ms of CPU per 10 ms of 48 kHz audio (offline rendering,
  minus the bare graph);
- spatial audio: ms per 10 ms of audio per voice, stereo panning and HRTF (8 voices);
- reactions: median ms to draw one frame of each animation on a 640x360 tile.

Every figure is the median of the runs' medians. The machine is shared (2 cores, other
jobs running): quote the load average printed with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.effects import harness  # noqa: E402
from tests.served import serve  # noqa: E402

from visavis.signaling.web import CSP  # noqa: E402


async def one_run(playwright: Any, origin: str, clip: Path, quick: bool) -> dict[str, Any]:
    async with harness.camera_context(playwright, clip) as context:
        page = await harness.open_harness(context, origin, "bench.html", CSP)
        frames = 40 if quick else 90
        return {
            "video": await page.evaluate(f"video({frames})"),
            "voice": await page.evaluate(f"voice({5 if quick else 20})"),
            "spatial": await page.evaluate(f"spatial({5 if quick else 20}, 8)"),
            "reactions": await page.evaluate(f"reactions({60 if quick else 240})"),
        }


def med(values: list[float]) -> float:
    return statistics.median(values)


def report(runs: list[dict[str, Any]]) -> None:
    print(
        f"\nmedians of {len(runs)} run(s); load average {os.getloadavg()} on {os.cpu_count()} cores"
    )
    print("\nvideo effects at 640x480 (effect resolution pinned)")
    print(
        f"{'mode':9} {'effect res':>10} {'mask every':>10} {'ms/frame':>9} {'model ms':>9}"
        f" {'fps':>6}"
    )
    rows: dict[tuple[str, int, int, int], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        for row in run["video"]:
            rows[(row["mode"], row["width"], row["height"], row["maskEvery"])].append(row)
    for (mode, w, h, every), group in rows.items():
        ms = med([r["msPerFrame"] for r in group])
        fps = med([r["fps"] for r in group])
        model = med([r["segmentMs"] for r in group if r.get("segmentMs") is not None] or [0.0])
        print(f"{mode:9} {f'{w}x{h}':>10} {every:>10} {ms:>9.1f} {model:>9.1f} {fps:>6.1f}")
    voice = med([run["voice"]["msPer10ms"] for run in runs])
    print(f"\nvoice isolation (RNNoise): {voice:.3f} ms per 10 ms of audio")
    stereo = med([run["spatial"]["stereo"] for run in runs])
    hrtf = med([run["spatial"]["hrtf"] for run in runs])
    print(f"spatial audio per voice: stereo {stereo:.4f}, HRTF {hrtf:.4f} ms per 10 ms of audio")
    print("\nreactions: ms to draw one frame on a 640x360 tile")
    for kind in runs[0]["reactions"]:
        print(f"  {kind:12} {med([run['reactions'][kind] for run in runs]):.2f}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer frames per figure")
    args = parser.parse_args()
    from playwright.async_api import async_playwright

    runs = []
    with tempfile.TemporaryDirectory() as tmp, serve(Path(tmp) / "serve") as server:
        clip = harness.camera_clip(Path(tmp))
        async with async_playwright() as playwright:
            for i in range(args.runs):
                print(f"run {i + 1} ...", flush=True)
                runs.append(await one_run(playwright, server.http_url, clip, args.quick))
                # the medians so far after each run: a crowded machine may not let all finish
                report(runs)


if __name__ == "__main__":
    asyncio.run(main())
