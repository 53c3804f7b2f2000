"""What the effects' browser tests share: test media made at test time, the web client's
origin, and the harness pages served on that origin.

The effects modules, the model, the wasm and the worklets are fetched from the origin that
serves ``src/visavis/web`` with the product's Content-Security-Policy; the harness pages
(``tests/effects/pages``) are answered on the same origin under ``/__effects__/`` by
Playwright's request routing, with the same policy, so that they can import the modules
exactly as the client does and are never shipped.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tests.browser import CHROMIUM, launch_chromium

__all__ = ["CHROMIUM", "launch"]

PAGES = Path(__file__).parent / "pages"
HARNESS_PREFIX = "/__effects__/"
ASTRONAUT = "astronaut.png"


def astronaut_path() -> Path:
    """scikit-image's portrait in front of a flag and a model shuttle (dev extra)."""
    import skimage

    return Path(skimage.__file__).parent / "data" / ASTRONAUT


def camera_clip(directory: Path, frames: int = 30) -> Path:
    """A 640x480 30 fps y4m of the astronaut (the top 512x384 of the still, scaled by 1.25),
    for ``--use-file-for-fake-video-capture`` (Chromium loops it)."""
    out = directory / "camera.y4m"
    subprocess.run(
        [
            "ffmpeg", "-loglevel", "error", "-y", "-loop", "1", "-i", str(astronaut_path()),
            "-vf", "crop=512:384:0:0,scale=640:480,format=yuv420p",
            "-frames:v", str(frames), "-r", "30", str(out),
        ],
        check=True,
        timeout=60,
    )  # fmt: skip
    return out


# How late a page's main thread runs a 20 ms timer over `ms`: {p95, max, ticks} in ms
# (``page.evaluate(MAIN_THREAD_LATENCY, ms)``, in any page). A page whose main thread does
# an effect's work, or waits on its GL readbacks, runs it tens to thousands of ms late.
MAIN_THREAD_LATENCY = """async (ms) => {
  const late = [];
  const end = performance.now() + ms;
  let due = performance.now() + 20;
  await new Promise((resolve) => {
    const tick = () => {
      const now = performance.now();
      late.push(Math.max(0, now - due));
      if (now >= end) return resolve();
      due = now + 20;
      setTimeout(tick, 20);
    };
    setTimeout(tick, 20);
  });
  late.sort((a, b) => a - b);
  const p95 = late[Math.floor(late.length * 0.95)];
  return {p95, max: late[late.length - 1], ticks: late.length};
}"""


def rgba(image: dict[str, Any]) -> NDArray[np.uint8]:
    """A frame returned by the pages' ``grab()`` as an HxWx4 array."""
    data = np.frombuffer(base64.b64decode(image["rgba"]), dtype=np.uint8)
    return data.reshape(image["height"], image["width"], 4)


def tools_missing() -> list[str]:
    return [tool for tool in ("ffmpeg", "sox", "espeak-ng") if shutil.which(tool) is None]


async def launch(playwright: Any, *extra_args: str) -> Any:
    """Headless Debian Chromium with the fake devices (and ``extra_args``: media files)."""
    return await launch_chromium(playwright, extra_args)


@contextlib.asynccontextmanager
async def camera_context(playwright: Any, clip: Path, *extra_args: str) -> AsyncIterator[Any]:
    """A browser context in a Chromium (``launch``) whose fake camera plays ``clip``; the
    browser is closed on exit."""
    browser = await launch(playwright, f"--use-file-for-fake-video-capture={clip}", *extra_args)
    try:
        yield await browser.new_context()
    finally:
        await browser.close()


async def open_harness(context: Any, origin: str, page_name: str, csp: str) -> Any:
    """A new page at ``ORIGIN/__effects__/PAGE_NAME`` answered from tests/effects/pages."""

    async def answer(route: Any) -> None:
        path = route.request.url.split(HARNESS_PREFIX, 1)[1].split("?", 1)[0]
        file = (PAGES / path).resolve()
        if PAGES.resolve() not in file.parents or not file.is_file():
            await route.fulfill(status=404, body="not a harness file")
            return
        kind = {".html": "text/html", ".css": "text/css"}.get(file.suffix, "text/javascript")
        await route.fulfill(
            status=200,
            body=file.read_bytes(),
            headers={"content-type": f"{kind}; charset=utf-8", "content-security-policy": csp},
        )

    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.route(f"{origin}{HARNESS_PREFIX}**", answer)
    await page.goto(f"{origin}{HARNESS_PREFIX}{page_name}")
    page.harness_errors = errors
    return page


SPEECH = (
    "The quick brown fox jumps over the lazy dog. "
    "Visavis keeps your voice clear while the vacuum cleaner runs. "
    "Every word should still be heard."
)


def microphone_clip(directory: Path, noise_volume: float = 0.08) -> Path:
    """A 48 kHz mono WAV: espeak-ng speech with a second of silence either side, mixed with
    steady pink noise (a fan, a vacuum cleaner) for ``--use-file-for-fake-audio-capture``."""
    speech = directory / "speech.wav"
    speech48 = directory / "speech48.wav"
    noise = directory / "noise.wav"
    out = directory / "microphone.wav"
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(speech), SPEECH], check=True, timeout=60)
    subprocess.run(
        ["sox", str(speech), "-r", "48000", "-c", "1", "-b", "16", str(speech48),
         "gain", "-n", "-3", "pad", "1", "1"],
        check=True, timeout=60,
    )  # fmt: skip
    seconds = float(
        subprocess.run(
            ["soxi", "-D", str(speech48)], check=True, capture_output=True, text=True, timeout=60
        ).stdout
    )
    subprocess.run(
        ["sox", "-n", "-r", "48000", "-c", "1", "-b", "16", str(noise),
         "synth", f"{seconds}", "pinknoise", "vol", f"{noise_volume}"],
        check=True, timeout=60,
    )  # fmt: skip
    subprocess.run(["sox", "-m", str(speech48), str(noise), str(out)], check=True, timeout=60)
    return out


def speech_clip(directory: Path, name: str, text: str, before: float, after: float) -> Path:
    """A 48 kHz mono WAV of espeak-ng saying ``text`` with ``before``/``after`` seconds of
    silence around it (Chromium loops it as its microphone)."""
    speech = directory / f"{name}-espeak.wav"
    out = directory / f"{name}.wav"
    subprocess.run(["espeak-ng", "-s", "160", "-w", str(speech), text], check=True, timeout=60)
    subprocess.run(
        ["sox", str(speech), "-r", "48000", "-c", "1", "-b", "16", str(out),
         "gain", "-n", "-3", "pad", f"{before}", f"{after}"],
        check=True, timeout=60,
    )  # fmt: skip
    return out


def float32(b64: str) -> NDArray[np.float32]:
    """A channel recorded by the pages' ``record()``."""
    return np.frombuffer(base64.b64decode(b64), dtype=np.float32)


def wav_levels(path: Path, ms: int = 20) -> NDArray[np.float64]:
    """RMS (linear, full scale 1) of each ``ms`` window of a 16-bit mono WAV."""
    import wave

    with wave.open(str(path)) as wav:
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2") / 32768.0
    n = rate * ms // 1000
    frames = samples[: len(samples) // n * n].reshape(-1, n)
    return np.asarray(np.sqrt(np.mean(frames**2, axis=1)))


def frame_levels_db(samples: NDArray[np.float32], rate: int, ms: int = 20) -> NDArray[np.float64]:
    """RMS level of each ``ms`` window, in dB relative to full scale."""
    n = rate * ms // 1000
    frames = samples[: len(samples) // n * n].astype(np.float64).reshape(-1, n)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    return np.asarray(20 * np.log10(np.maximum(rms, 1e-9)))
