"""Debian's Chromium driven by Playwright, as every browser test here launches it.

Playwright cannot download its own browsers on this network; it drives /usr/bin/chromium
(installed by scripts/setup) through ``executable_path``. The flags keep Chromium off the
network (no background services) and give it a fake camera and microphone; pass
``--use-file-for-fake-video-capture=FILE.y4m`` / ``--use-file-for-fake-audio-capture=FILE.wav``
in ``extra_args`` for specific media.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


async def launch_chromium(
    playwright: Any, extra_args: Sequence[str] = (), headless: bool = True
) -> Any:
    """A headless Debian Chromium (``playwright.chromium.launch`` with our flags)."""
    return await playwright.chromium.launch(
        executable_path=CHROMIUM, headless=headless, args=[*CHROMIUM_ARGS, *extra_args]
    )


@contextlib.asynccontextmanager
async def chromium(*extra_args: str) -> AsyncIterator[Any]:
    """Playwright and a headless Debian Chromium (``launch_chromium``), closed on exit."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright, extra_args)
        try:
            yield browser
        finally:
            await browser.close()
