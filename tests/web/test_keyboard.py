"""Keyboard only, against the real `visavis serve`: sign in with Tab and Enter, answer an
incoming call with Enter (the ring view takes the focus, so a ring that comes any time
after the page loaded can be answered at once), mute with Space and end with Enter."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, Page, expect

from tests.served import Served
from tests.web.clients import PASSWORD, open_device, sign_in, signup_rest

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="package")]

FOCUSED = """() => { const e = document.activeElement;
  return e ? (e.getAttribute("aria-label") || e.labels?.[0]?.textContent || e.textContent || "")
    .trim() : ""; }"""


async def tab_to(page: Page, name: str, presses: int = 40) -> None:
    """Press Tab until the focused control's name starts with ``name`` (bounded)."""
    seen = []
    for _ in range(presses):
        await page.keyboard.press("Tab")
        focused = await page.evaluate(FOCUSED)
        if focused.startswith(name):
            return
        seen.append(focused)
    raise AssertionError(f"Tab never reached {name!r}; focus went through {seen}")


async def test_sign_in_answer_mute_and_end_with_the_keyboard_only(
    server: Served, browser: Browser
) -> None:
    signup_rest(server.http_url, "kim@example.com", "Kim")
    signup_rest(server.http_url, "lou@example.com", "Lou")
    kim = await open_device(browser, server.http_url, max_height=360)
    lou = await open_device(browser, server.http_url, max_height=360)
    try:
        page = kim.page
        await tab_to(page, "Handle")
        await page.keyboard.type("kim@example.com")
        await tab_to(page, "Password")
        await page.keyboard.type(PASSWORD)
        await tab_to(page, "Name this device")
        await page.keyboard.type("Kim's keyboard")
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name="Call someone")).to_be_visible()
        await page.wait_for_function("() => window.visavis.store.get().status === 'online'")

        await sign_in(lou, "lou@example.com", "Lou's laptop")
        await lou.find_and_call("kim@example.com")
        await expect(page.get_by_role("alertdialog")).to_be_visible()
        await expect(page.get_by_role("button", name="Video", exact=True)).to_be_focused()
        await page.keyboard.press("Enter")
        await kim.wait_phase("in_call", within=30)

        await tab_to(page, "Mute")
        await page.keyboard.press("Space")
        await expect(page.locator('[data-action="mute"]')).to_have_attribute("aria-pressed", "true")
        assert await page.evaluate("!window.visavis.media.audio.enabled")
        await tab_to(page, "End")
        await page.keyboard.press("Enter")
        for device in (kim, lou):
            await device.wait_phase("idle")
            assert device.errors == [], device.errors
    finally:
        await kim.close()
        await lou.close()
