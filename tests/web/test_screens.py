"""Every main screen at phone (390x844) and desktop (1440x900) size, light and dark:
a screenshot saved under test-artifacts/web/ (git-ignored), nothing wider than the
viewport, and axe-core (served from vendor/, like everything else) finds no serious or
critical accessibility violation."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from tests.served import Served, served_fixture
from tests.web.clients import Device, axe_violations, open_device, sign_in, signup_rest

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="package")]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"
SIZES = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1440, "height": 900}}
SCHEMES = ("light", "dark")


async def check_screen(page: Page, name: str) -> None:
    """Screenshot ``name`` at every size and scheme; no overflow; axe clean."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for size, viewport in SIZES.items():
        await page.set_viewport_size(viewport)  # type: ignore[arg-type]
        for scheme in SCHEMES:
            await page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
            await page.wait_for_timeout(100)  # one frame for the media query to apply
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - window.innerWidth"
            )
            if overflow > 0:
                wide = await page.evaluate(
                    """() => [...document.querySelectorAll("body *")]
                        .filter((e) => e.getBoundingClientRect().right > innerWidth + 0.5)
                        .slice(0, 5).map((e) => e.tagName + "." + e.className)"""
                )
                raise AssertionError(f"{name} at {size}/{scheme} overflows by {overflow}px: {wide}")
            await page.screenshot(path=str(ARTIFACTS / f"{name}-{size}-{scheme}.png"))
            # axe (slow) on two of the four: both sizes, both schemes.
            if (size, scheme) in (("desktop", "light"), ("phone", "dark")):
                violations = await axe_violations(page)
                assert violations == [], f"{name} at {size}/{scheme}: {violations}"


# Its own server with a 180 s ring timeout: the ring view is photographed at leisure
# (eight screenshots and four axe runs take over a minute on a loaded machine).
screens_server = served_fixture("screens", VISAVIS_SIGNALING__RING_TIMEOUT="180")


async def test_every_screen_fits_and_passes_axe(screens_server: Served, browser: Browser) -> None:
    server = screens_server
    signup_rest(server.http_url, "sam@example.com", "Sam Screens")
    signup_rest(server.http_url, "tia@example.com", "Tia Screens")
    sam = await open_device(browser, server.http_url, max_height=360)
    tia = await open_device(browser, server.http_url, max_height=360)
    devices: list[Device] = [sam, tia]
    try:
        await check_screen(sam.page, "signin")
        await sam.page.get_by_role("tab", name="Create account").click()
        await check_screen(sam.page, "signup")
        await sam.page.get_by_role("tab", name="Sign in").click()
        await sign_in(sam, "sam@example.com", "sam laptop")
        await sign_in(tia, "tia@example.com", "tia phone")

        await sam.page.get_by_role("searchbox", name="Handle").fill("tia@example.com")
        await sam.page.get_by_role("button", name="Find").click()
        await expect(sam.page.get_by_text("reachable", exact=False)).to_be_visible()
        await check_screen(sam.page, "contacts")

        await sam.go_home_tab("Devices")
        await expect(sam.page.locator(".devices li")).to_have_count(1)
        await check_screen(sam.page, "devices")
        await sam.go_home_tab("Contacts")

        await sam.page.get_by_role("button", name="Video call").first.click()
        await expect(tia.page.get_by_role("alertdialog")).to_be_visible()
        await check_screen(tia.page, "ring")
        await check_screen(sam.page, "calling")
        await tia.page.get_by_role("button", name="Video", exact=True).click()
        await sam.wait_phase("in_call", within=40)
        await sam.wait_frames(3, within=40)
        await check_screen(sam.page, "call")
        # Tia shares her screen: a large tile of its own, her camera beside it.
        await tia.page.get_by_role("button", name="Share screen").click()
        await expect(sam.page.locator("video.remote.screen")).to_be_visible()
        await check_screen(sam.page, "call-screen-share")
        await sam.page.get_by_role("button", name="End").click()
        await sam.wait_phase("idle")

        await sam.go_home_tab("History")
        await expect(sam.page.locator(".history li")).to_have_count(1)
        await check_screen(sam.page, "history")

        # Call links: the guest's page, the lobby in the call, a link turned off.
        await sam.go_home_tab("Contacts")
        await sam.page.get_by_role("button", name="Make a call link").click()
        url = await sam.page.get_by_role("textbox", name="Call link").input_value()
        path = url.removeprefix(server.http_url)
        guest = await open_device(browser, server.http_url, max_height=360, path=path)
        devices.append(guest)
        await expect(guest.page.get_by_label("Your name")).to_be_visible()
        await check_screen(guest.page, "guest-join")
        await guest.page.get_by_label("Your name").fill("Gia")
        await guest.page.get_by_role("button", name="Ask to join").click()
        await expect(guest.page.locator(".lobby-wait")).to_be_visible()
        await check_screen(guest.page, "guest-waiting")
        await sam.page.locator(".lobby-notice").get_by_role("button", name="Open the call").click()
        await expect(sam.page.get_by_role("button", name="Admit Gia")).to_be_visible()
        await check_screen(sam.page, "call-lobby")
        await sam.page.get_by_role("button", name="Refuse Gia").click()
        await expect(guest.page.get_by_role("heading", name="Not let in")).to_be_visible()
        await sam.page.get_by_role("button", name="End").click()
        await sam.wait_phase("idle")
        await sam.page.get_by_role("button", name="Turn off this call link").click()
        await expect(sam.page.get_by_role("textbox", name="Call link")).to_have_count(0)
        await guest.page.reload()
        await expect(
            guest.page.get_by_role("heading", name="This call link cannot be used")
        ).to_be_visible()
        await check_screen(guest.page, "guest-link-off")
        for device in devices:
            assert device.errors == [], device.errors
    finally:
        for device in devices:
            await device.close()
