"""A 1:1 call between two browsers whose fake camera is a generated 1080p clip (ffmpeg's
test pattern, moving): the receiver decodes 1920x1080 frames, against the real
`visavis serve`. 1:1 calls send the camera's best up to 1080p (the default camera-quality
setting) when the network allows; loopback allows."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, expect

from tests.browser import chromium
from tests.served import Served
from tests.web.clients import Device, open_device, sign_in, signup_rest

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="package")]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten 1920x1080 frames (10 fps, looped by Chromium): about 31 MB of raw video."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.fail("ffmpeg is missing: scripts/setup installs it")
    out = tmp_path_factory.mktemp("clip") / "hd.y4m"
    pattern = "testsrc2=size=1920x1080:rate=10"
    subprocess.run(
        [
            ffmpeg,
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            pattern,
            "-frames:v",
            "10",
            "-pix_fmt",
            "yuv420p",
            str(out),
        ],
        check=True,
    )
    return out


@pytest_asyncio.fixture(scope="module", loop_scope="package")
async def hd_browser(clip: Path) -> AsyncIterator[Browser]:
    async with chromium(f"--use-file-for-fake-video-capture={clip}") as launched:
        yield launched


async def widest(device: Device) -> tuple[int, int]:
    stats = await device.stats()
    return (int(stats["frameWidth"]), int(stats["frameHeight"])) if stats else (0, 0)


async def test_receiver_decodes_1080p_from_a_1080p_camera(
    server: Served, hd_browser: Browser
) -> None:
    signup_rest(server.http_url, "hal@example.com", "Hal")
    signup_rest(server.http_url, "ida@example.com", "Ida")
    hal = await open_device(hd_browser, server.http_url)
    ida = await open_device(hd_browser, server.http_url)
    try:
        await sign_in(hal, "hal@example.com", "Hal's laptop")
        await sign_in(ida, "ida@example.com", "Ida's laptop")
        await hal.find_and_call("ida@example.com")
        await expect(ida.page.get_by_role("alertdialog")).to_be_visible()
        await ida.page.get_by_role("button", name="Video", exact=True).click()
        for device in (hal, ida):
            await device.wait_phase("in_call", within=30)
        sent = await hal.page.evaluate(
            "(() => { const s = window.visavis.media.video.getSettings();"
            " return [s.width, s.height]; })()"
        )
        assert sent == [1920, 1080], sent  # the camera opened at its best
        # The sender starts low and climbs as the bandwidth estimate grows.
        deadline = time.monotonic() + 45
        size = (0, 0)
        while time.monotonic() < deadline and size != (1920, 1080):
            size = await widest(ida)
            await ida.page.wait_for_timeout(500)
        assert size == (1920, 1080), f"Ida decodes {size[0]}x{size[1]}"
        await hal.page.locator('[data-action="end"]').click()
        for device in (hal, ida):
            await device.wait_phase("idle")
            assert device.errors == [], device.errors
    finally:
        await hal.close()
        await ida.close()
