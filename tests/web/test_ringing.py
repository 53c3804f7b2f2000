"""Ringing in every tab, call waiting, and the microphone and speaker a device chose,
against the real `visavis serve` (1:1 calls, 360p).

Tom has two tabs open in one browser profile (one device: the newer tab holds the
connection). Rae calls: both tabs ring; Tom answers in the older tab, which takes the
connection back, and the other tab stops ringing ("Answered in another tab"). Media
flows both ways, through the microphone and speaker Tom chose in settings. Then Uma calls
Tom during that call: call waiting offers "End and answer" (Rae's call ends, Uma's
begins); Rae calling back meanwhile is declined from the banner while Tom stays with Uma.
Last, Tom answers a call "Audio only": his camera stays closed.
"""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect
from playwright.async_api import TimeoutError as PlaywrightTimeout

from tests.served import Served
from tests.waiting import until_async
from tests.web.clients import Device, axe_violations, open_device, sign_in, signup_rest

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="package")]

PEOPLE = {"rae@example.com": "Rae", "tom@example.com": "Tom", "uma@example.com": "Uma"}


async def choose(device: Device, choice: str, index: int) -> str:
    """Pick the ``index``-th real device in a settings select; return its device id."""
    select = device.page.locator(f'select[data-choice="{choice}"]')
    await expect(select.locator("option")).not_to_have_count(1)  # enumerated
    value: str = await select.locator("option").nth(index).get_attribute("value") or ""
    await select.select_option(value)
    return value


async def test_every_tab_rings_answer_in_one_then_call_waiting(
    server: Served, browser: Browser
) -> None:
    for handle, name in PEOPLE.items():
        signup_rest(server.http_url, handle, name)
    rae = await open_device(browser, server.http_url, max_height=360)
    tom = await open_device(browser, server.http_url, max_height=360)
    uma = await open_device(browser, server.http_url, max_height=360)
    devices = [rae, tom, uma]
    try:
        for device, handle in zip(devices, PEOPLE, strict=True):
            await sign_in(device, handle, f"{PEOPLE[handle]}'s laptop")

        # Tom's microphone and speaker, chosen in settings (kept across a reload).
        mic = await choose(tom, "mic", 2)
        speaker = await choose(tom, "speaker", 2)
        await tom.page.reload()
        await expect(tom.page.locator('select[data-choice="mic"]')).to_have_value(mic)
        await expect(tom.page.locator('select[data-choice="speaker"]')).to_have_value(speaker)

        # A second tab of the same profile: same device, it takes the connection.
        page2 = await tom.context.new_page()
        tab2 = Device(tom.context, page2, [])
        page2.on("pageerror", lambda exc: tab2.errors.append(str(exc)))
        await page2.goto(server.http_url + "/")
        await page2.wait_for_function("() => window.visavis.store.get().status === 'online'")
        await expect(tom.page.get_by_role("button", name="Use here")).to_be_visible()
        assert await axe_violations(tom.page) == []  # the "open in another tab" banner

        await rae.find_and_call("tom@example.com")
        for tab in (tom, tab2):  # both tabs ring
            await expect(tab.page.get_by_role("alertdialog")).to_be_visible()
            await expect(tab.page.get_by_role("heading", name="Rae")).to_be_visible()
        await tom.page.get_by_role("button", name="Video", exact=True).click()
        await expect(tab2.page.get_by_text("Answered in another tab")).to_be_visible()
        for device in (rae, tom):
            await device.wait_phase("in_call", within=30)
        await rae.wait_frames(10)
        await tom.wait_frames(10)
        await tab2.wait_phase("idle")
        assert await tab2.page.evaluate("window.visavis.store.get().status") == "replaced"
        # The chosen microphone is the one sending; the call plays on the chosen speaker.
        used = await tom.page.evaluate("window.visavis.media.audio.getSettings().deviceId")
        assert used == mic
        await expect(tom.page.locator("video.remote")).to_be_visible()
        assert await tom.page.evaluate("document.querySelector('video.remote').sinkId") == speaker

        # Call waiting: Uma calls Tom during the call; Tom ends Rae's call and answers.
        await uma.find_and_call("tom@example.com")
        banner = tom.page.locator(".waiting")
        await expect(banner).to_contain_text("Uma is calling")
        # (the banner only: the ring times out in 12 s here, a whole-page run is slower)
        assert await axe_violations(tom.page, ".waiting") == []
        try:
            await banner.get_by_role("button", name="End and answer").click()
        except PlaywrightTimeout as exc:
            seen = await tom.page.evaluate(
                "(() => { const s = window.visavis.store.get();"
                " return {waiting: s.waiting, call: s.call, status: s.status,"
                " phases: window.visavis.phases}; })()"
            )
            raise AssertionError(f"could not click End and answer: {seen}") from exc
        for device in (uma, tom):
            await device.wait_phase("in_call", within=45)
        await rae.wait_phase("idle", within=30)  # her call ended when Tom's answer landed
        await uma.wait_frames(10)
        assert await tom.page.evaluate("window.visavis.store.get().call.peer.handle") == (
            "uma@example.com"
        )

        # Rae calls back meanwhile: declined from the banner; Tom stays with Uma.
        await rae.find_and_call("tom@example.com")
        await expect(banner).to_contain_text("Rae is calling")
        await banner.get_by_role("button", name="Decline").click()
        await expect(banner).to_have_count(0)
        await rae.wait_phase("idle")
        frames = await tom.frames_decoded()
        await tom.wait_frames(frames + 10)
        assert await tom.phase() == "in_call"

        await tom.page.locator('[data-action="end"]').click()
        for device in (tom, uma):
            await device.wait_phase("idle")

        # Answered audio only: Tom's camera stays closed, Uma hears him, sees no video.
        await uma.find_and_call("tom@example.com")
        await expect(tom.page.get_by_role("alertdialog")).to_be_visible()
        await tom.page.get_by_role("button", name="Audio only").click()
        for device in (uma, tom):
            await device.wait_phase("in_call", within=30)
        camera = "window.visavis.media.stream.getVideoTracks().length"
        assert await tom.page.evaluate(camera) == 0
        packets = "window.visavis.stats().then((s) => s ? s.packetsIn : 0)"
        start = await uma.page.evaluate(packets)

        async def hears_tom() -> bool:
            return int(await uma.page.evaluate(packets)) > start + 50

        await until_async(hears_tom, "Uma receives Tom's audio", 30)
        assert await uma.frames_decoded() == 0
        await uma.page.locator('[data-action="end"]').click()
        for device in (tom, uma):
            await device.wait_phase("idle")
        for device in (*devices, tab2):
            assert device.errors == [], device.errors
    finally:
        for device in devices:
            await device.close()
