"""Screen sharing as a tile of its own, in real Chromium against the real `visavis serve`.

1:1: the sharer keeps sending its camera and puts the screen (Chromium's fake display
capture) on the call's screen slot; the other side shows a separate, large screen tile
and decodes frames from both. "Stop sharing" removes the tile; so does the browser's own
"stop sharing" (the capture track ends), from the answering side this time.

Group (three people through the SFU): the share is one more published track, end-to-end
encrypted like the camera (an SFrame transform on its sender and on every receiver); the
two others see it as its own large tile and decode it while the sharer's camera tile
keeps decoding; when the share ends the SFU unpublishes it and the tiles go.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from tests.served import Served
from tests.web.clients import Device, open_device, sign_in, signup_rest

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="package")]

RECEIVED = "window.visavis.controller ? window.visavis.controller.received() : null"
# What the browser does when the person presses its own "Stop sharing" bar: the capture
# track ends (a page's own stop() fires no "ended", so the event is sent here).
BROWSER_STOPS_SHARING = """(() => { const t = window.visavis.media.screen;
  t.stop(); t.dispatchEvent(new Event("ended")); })()"""


async def received(device: Device) -> Any:
    return await device.page.evaluate(RECEIVED)


async def wait_growing(
    device: Device, read: Any, what: str, within: float = 45, by: int = 10
) -> None:
    """Until ``read(received)`` (frames decoded) grew by ``by`` from its value now."""
    start = read(await received(device))
    deadline = time.monotonic() + within
    now = start
    while time.monotonic() < deadline:
        now = read(await received(device))
        if now >= start + by:
            return
        await device.page.wait_for_timeout(250)
    raise AssertionError(f"{what}: {start} -> {now} frames decoded, wanted +{by}")


async def answer(device: Device) -> None:
    await expect(device.page.get_by_role("alertdialog")).to_be_visible()
    await device.page.get_by_role("button", name="Video", exact=True).click()


async def test_one_to_one_screen_share_is_a_tile_of_its_own(
    server: Served, browser: Browser
) -> None:
    signup_rest(server.http_url, "sia@example.com", "Sia")
    signup_rest(server.http_url, "tim@example.com", "Tim")
    sia = await open_device(browser, server.http_url, max_height=360)
    tim = await open_device(browser, server.http_url, max_height=360)
    try:
        await sign_in(sia, "sia@example.com", "Sia's laptop")
        await sign_in(tim, "tim@example.com", "Tim's laptop")
        await sia.find_and_call("tim@example.com")
        await answer(tim)
        for device in (sia, tim):
            await device.wait_phase("in_call", within=30)
        await tim.wait_frames(10)

        # Sia shares: Tim sees her screen large and her camera beside it, both decoding.
        await sia.page.get_by_role("button", name="Share screen").click()
        await expect(sia.page.get_by_role("button", name="Stop sharing")).to_be_visible()
        screen = tim.page.locator('video.remote.screen[aria-label="Sia\'s screen"]')
        await expect(screen).to_be_visible()
        await expect(
            tim.page.locator('video.remote-camera[aria-label="Sia\'s video"]')
        ).to_be_visible()
        await wait_growing(tim, lambda r: r["screen"], "Sia's screen at Tim")
        await wait_growing(tim, lambda r: r["camera"], "Sia's camera at Tim while she shares")
        # Her own view keeps her camera (the self view), not the screen.
        assert await sia.page.evaluate(
            "window.visavis.media.outgoing('video') === window.visavis.media.video"
        )

        await sia.page.get_by_role("button", name="Stop sharing").click()
        await expect(screen).to_have_count(0)
        await expect(tim.page.locator('video.remote[aria-label="Sia\'s video"]')).to_be_visible()
        await wait_growing(tim, lambda r: r["camera"], "Sia's camera after the share")

        # Tim (who answered) shares, then stops with the browser's own control.
        await tim.page.get_by_role("button", name="Share screen").click()
        their = sia.page.locator('video.remote.screen[aria-label="Tim\'s screen"]')
        await expect(their).to_be_visible()
        await wait_growing(sia, lambda r: r["screen"], "Tim's screen at Sia")
        await tim.page.evaluate(BROWSER_STOPS_SHARING)
        await expect(their).to_have_count(0)
        await expect(tim.page.get_by_role("button", name="Share screen")).to_be_visible()
        await wait_growing(sia, lambda r: r["camera"], "Tim's camera after the share")

        await sia.page.locator('[data-action="end"]').click()
        for device in (sia, tim):
            await device.wait_phase("idle")
            assert device.errors == [], device.errors
    finally:
        await sia.close()
        await tim.close()


GROUP_STATE = """(() => { const c = window.visavis.controller;
  return c && {slots: [...c.slots.entries()], tracks: [...c.tracks.keys()],
    screen: c.screenTx ? [c.screenTx.mid, c.screenTx.direction, c.screenTx.currentDirection,
                          c.screenTx.sender.track?.label] : null,
    phase: window.visavis.store.get().call.phase, ice: c.pc?.iceConnectionState}; })()"""

E2EE_SCREEN = """(() => {
  const app = window.visavis, c = app.controller, session = app.e2ee.session;
  const sender = c.screenTx?.sender;
  const receivers = c.pc.getTransceivers()
    .filter((t) => c.slots.get(t.mid)?.source === "screen").map((t) => t.receiver);
  return {sender: sender ? session.attached.has(sender) : null,
          receivers: receivers.map((r) => session.attached.has(r))};
})()"""


async def test_group_screen_share_goes_through_the_sfu_encrypted_as_its_own_tile(
    server: Served, browser: Browser
) -> None:
    people = {"ora@example.com": "Ora", "pip@example.com": "Pip", "quy@example.com": "Quy"}
    for handle, name in people.items():
        signup_rest(server.http_url, handle, name)
    devices = [await open_device(browser, server.http_url, max_height=360) for _ in people]
    ora, pip, quy = devices
    console: list[str] = []
    for name, device in zip(people.values(), devices, strict=True):
        device.page.on(
            "console",
            lambda msg, name=name: (
                console.append(f"{name} {msg.type}: {msg.text}")
                if msg.type in ("warning", "error")
                else None
            ),
        )
    try:
        for device, (handle, name) in zip(devices, people.items(), strict=True):
            await sign_in(device, handle, f"{name}'s laptop")
        await ora.page.get_by_label("Handles, separated by commas").fill(
            "pip@example.com, quy@example.com"
        )
        await ora.page.get_by_role("button", name="Call all").click()
        await asyncio.gather(answer(pip), answer(quy))
        for device in devices:
            await device.wait_phase("in_call", within=60)
        ora_id = await ora.page.evaluate("window.visavis.controller.participantId")
        for device in (pip, quy):
            await wait_growing(device, lambda r: r.get(ora_id, {}).get("video", 0), "Ora's camera")

        # (generous waits: three pages, encoders and E2EE workers on two shared cores)
        await ora.page.get_by_role("button", name="Share screen").click(timeout=60_000)
        await expect(ora.page.get_by_role("button", name="Stop sharing")).to_be_visible(
            timeout=45_000
        )
        tile = f'.tile.screen.large[data-screen-of="{ora_id}"]'
        for device in (pip, quy):
            try:
                await expect(device.page.locator(tile)).to_be_visible(timeout=45_000)
            except AssertionError as exc:
                seen = [await d.page.evaluate(GROUP_STATE) for d in devices]
                log = server.log()[-3000:]
                raise AssertionError(f"no screen tile: {seen} {console} {log}") from exc
            await expect(device.page.locator(tile).locator("figcaption")).to_have_text(
                "ora@example.com's screen"  # the SFU names people by handle
            )
            # the camera tile is still there, beside the screen
            camera = device.page.locator(f'.tile[data-participant="{ora_id}"] video')
            await expect(camera).to_be_visible()
            await wait_growing(device, lambda r: r[ora_id]["screen"], "Ora's screen")
            await wait_growing(device, lambda r: r[ora_id]["video"], "Ora's camera while sharing")
            seen = await device.page.evaluate(E2EE_SCREEN)
            assert seen["receivers"] == [True], seen  # SFrame-decrypted, like the camera
        assert (await ora.page.evaluate(E2EE_SCREEN))["sender"] is True
        stats = await pip.page.evaluate("window.visavis.e2ee.stats()")
        assert stats["frames"]["decrypted"] > 0, stats

        # The browser's own "stop sharing": the SFU unpublishes the track, the tiles go,
        # the camera goes on.
        await ora.page.evaluate(BROWSER_STOPS_SHARING)
        await expect(ora.page.get_by_role("button", name="Share screen")).to_be_visible()
        for device in (pip, quy):
            await expect(device.page.locator(".tile.screen")).to_have_count(0, timeout=45_000)
            await wait_growing(device, lambda r: r[ora_id]["video"], "Ora's camera after")
        await expect(pip.page.locator(".tile")).to_have_count(2)

        # Two leave; the call ends by itself for the last one, left alone (clicking its
        # End too would race that: the button is disabled while the call ends).
        for device in devices[:-1]:
            await device.page.locator('[data-action="end"]').click()
        for device in devices:
            await device.wait_phase("idle")
            assert device.errors == [], device.errors
    finally:
        for device in devices:
            await device.close()
