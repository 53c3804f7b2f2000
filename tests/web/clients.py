"""Browser devices for the web client's tests: one Playwright context per device.

Each context is its own browser profile (its own localStorage, so its own device token),
in one shared Chromium. Helpers drive the client through its visible controls (roles and
labels, as a person would) and read media progress from the page's own getStats()
summary (``window.visavis.stats()``).
"""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from playwright.async_api import Browser, BrowserContext, Page, expect
from playwright.async_api import TimeoutError as PlaywrightTimeout

PASSWORD = "correct horse battery"
# Screens change on server events; on this shared 2-core machine under load a change can
# take seconds (the ended screen alone lingers 2.5 s), so waits get 15 s, not 5 s.
expect.set_options(timeout=15_000)


def signup_rest(http_url: str, handle: str, name: str) -> None:
    """Create an account over REST (the sign-up form is tested once, elsewhere)."""
    body = json.dumps({"handle": handle, "password": PASSWORD, "display_name": name}).encode()
    request = urllib.request.Request(
        f"{http_url}/api/signup", body, {"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201


# What a failed wait reports: the call, its path and the last errors shown.
DIAGNOSE = """(() => { const a = window.visavis, c = a.controller;
  return {call: a.store.get().call, phases: a.phases, error: a.store.get().error,
          ice: c?.pc?.iceConnectionState, signaling: c?.pc?.signalingState,
          participants: c?.participants ? [...c.participants.keys()] : null}; })()"""


@dataclass
class Device:
    """One signed-in browser device."""

    context: BrowserContext
    page: Page
    errors: list[str]

    async def stats(self) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self.page.evaluate("window.visavis.stats()")
        return result

    async def phase(self) -> str:
        phase: str = await self.page.evaluate("window.visavis.store.get().call.phase")
        return phase

    async def wait_phase(self, phase: str, within: float = 15.0) -> None:
        try:
            await self.page.wait_for_function(
                "p => window.visavis.store.get().call.phase === p",
                arg=phase,
                timeout=within * 1000,
            )
        except PlaywrightTimeout as exc:
            seen = await self.page.evaluate(DIAGNOSE)
            raise AssertionError(f"phase never became {phase}: {seen}") from exc

    async def frames_decoded(self) -> int:
        stats = await self.stats()
        return int(stats["framesDecoded"]) if stats else 0

    async def wait_frames(self, at_least: int, within: float = 20.0) -> int:
        """Wait until this device has decoded ``at_least`` inbound video frames."""
        deadline = time.monotonic() + within
        frames = 0
        while time.monotonic() < deadline:
            frames = await self.frames_decoded()
            if frames >= at_least:
                return frames
            await self.page.wait_for_timeout(200)
        raise AssertionError(f"decoded {frames} frames, wanted {at_least}")

    async def find_and_call(self, handle: str, media: str = "video") -> None:
        page = self.page
        await page.get_by_role("searchbox", name="Handle").fill(handle)
        await page.get_by_role("button", name="Find").click()
        name = "Video call" if media == "video" else "Audio call"
        await page.get_by_role("button", name=name).first.click()

    async def go_home_tab(self, tab: str) -> None:
        await self.page.get_by_role("button", name=tab).first.click()

    async def close(self) -> None:
        await self.context.close()


async def open_device(
    browser: Browser,
    http_url: str,
    viewport: dict[str, int] | None = None,
    max_height: int | None = None,
    path: str = "/",
) -> Device:
    """A new device opening ``path``; ``max_height`` is its camera-quality setting (1080,
    720, 360), as the settings menu stores it (many 1080p encoders at once starve this
    2-core machine)."""
    context = await browser.new_context(
        viewport=viewport or {"width": 1000, "height": 700},  # type: ignore[arg-type]
        permissions=["camera", "microphone"],
    )
    if max_height is not None:
        await context.add_init_script(
            "localStorage.setItem('visavis.media', JSON.stringify({...JSON.parse("
            f"localStorage.getItem('visavis.media') || '{{}}'), maxHeight: {max_height}}}))"
        )
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(http_url + path)
    return Device(context, page, errors)


async def sign_in(device: Device, handle: str, device_name: str) -> None:
    page = device.page
    await page.get_by_label("Handle (email or phone)").fill(handle)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_label("Name this device").fill(device_name)
    await page.get_by_role("button", name="Sign in", exact=True).last.click()
    await expect(page.get_by_role("heading", name="Call someone")).to_be_visible()
    await page.wait_for_function("() => window.visavis.store.get().status === 'online'")


async def sign_up(device: Device, handle: str, name: str, device_name: str) -> None:
    page = device.page
    await page.get_by_role("tab", name="Create account").click()
    await page.get_by_label("Handle (email or phone)").fill(handle)
    await page.get_by_label("Your name").fill(name)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_label("Name this device").fill(device_name)
    await page.get_by_role("button", name="Create account").last.click()
    await expect(page.get_by_role("heading", name="Call someone")).to_be_visible()
    await page.wait_for_function("() => window.visavis.store.get().status === 'online'")


async def axe_violations(page: Page, include: str | None = None) -> list[dict[str, Any]]:
    """The serious and critical axe-core violations of the page (or of the elements
    matching ``include`` only: quicker, for a banner that is there for seconds); axe is
    served from vendor/ like everything else."""
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.add_script_tag(url="/vendor/axe-core/axe.min.js")
    result: list[dict[str, Any]] = await page.evaluate(
        """(include) => axe.run(include ? {include: [[include]]} : document,
                                {resultTypes: ["violations"]}).then((r) =>
            r.violations.filter((v) => v.impact === "serious" || v.impact === "critical")
             .map((v) => ({id: v.id, impact: v.impact, help: v.help,
                           nodes: v.nodes.slice(0, 3).map((n) => n.target.join(" "))})))""",
        include,
    )
    return result
