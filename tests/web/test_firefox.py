"""The web client in Debian's Firefox ESR (WebDriver BiDi, tests/firefox.py), against the
real ``visavis serve``, alone and with Debian's Chromium (Playwright) on the other end.

- Firefox signs up and in through the forms; the main screens (contacts with a found
  person, favourites, devices, history, camera preview, the sign-in forms) render with no
  console error and no uncaught exception.
- A 1:1 call each way between Firefox and Chromium: end-to-end checked (each side's
  signed DTLS fingerprint verified by the other: one verification code on both screens),
  inbound video frames decoded grow on both sides.
- A group call through the SFU with Firefox and Chromium: SFrame in Firefox through
  RTCRtpScriptTransform (Chromium: createEncodedStreams), each decodes the other's video
  and hears its audio, frames encrypted and decrypted counted in both workers, nothing
  dropped for a bad key or a failed authentication, one verification code.

Firefox's fake camera is a moving colour pattern and its fake microphone a tone (prefs in
tests/firefox.py); Chromium uses its own fake devices. Every device is at 360p: several
encoders share two cores here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, expect

from tests.firefox import Firefox, Tab, launch_firefox
from tests.served import Served, served_fixture
from tests.waiting import until_async
from tests.web.clients import PASSWORD, Device, open_device, sign_in, signup_rest
from tests.web.conftest import RING_TIMEOUT

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="package")]

# Waits sized for a loaded 2-core machine: a call (two browsers, two encoders) can take
# tens of seconds to connect and decode there; every wait is a bounded poll.
CALL_WAIT = 60.0
STATS = "window.visavis.e2ee.stats()"


# This module's own ``visavis serve``, whose relay may relay to loopback peers.
#
# Firefox pairs loopback candidates only with loopback candidates, and Firefox 153 does
# not gather 127.0.0.1 as a host candidate here (``media.peerconnection.ice.loopback``
# notwithstanding): its host candidates are the machine's interface addresses. The SFU
# announces 127.0.0.1, so Firefox reaches it through its TURN allocation on the relay
# (a relayed address on 127.0.0.1), which needs ``relay.allow_loopback_peers``. 1:1 calls
# pair the two browsers' interface addresses and need no relay.
server = served_fixture(
    "web-firefox",
    VISAVIS_SIGNALING__RING_TIMEOUT=RING_TIMEOUT,
    VISAVIS_RELAY__ALLOW_LOOPBACK_PEERS="true",
)


@pytest_asyncio.fixture(scope="module", loop_scope="package")
async def firefox(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Firefox]:
    async with launch_firefox(tmp_path_factory.mktemp("firefox")) as browser:
        yield browser


# -- Firefox as a person uses it ----------------------------------------------------------


async def ff_open(firefox: Firefox, server: Served, max_height: int = 360) -> Tab:
    """A new Firefox device at ``/`` with the camera-quality setting at ``max_height``."""
    tab = await firefox.new_tab(server.http_url + "/")
    await tab.eval(
        f"localStorage.setItem('visavis.media', JSON.stringify({{maxHeight: {max_height}}}))"
    )
    await tab.wait_for("document.querySelector('form') !== null", what="the sign-in form")
    return tab


async def ff_sign_in(tab: Tab, handle: str, device_name: str) -> None:
    await tab.fill("Handle (email or phone)", handle)
    await tab.fill("Password", PASSWORD)
    await tab.fill("Name this device", device_name)
    await tab.click("Sign in", nth=-1)  # the form's button, not the "Sign in" tab
    await ff_online(tab)


async def ff_online(tab: Tab) -> None:
    await tab.wait_for(
        "window.visavis.store.get().status === 'online'", within=CALL_WAIT, what="online"
    )
    await tab.wait_for(
        "[...document.querySelectorAll('h2')].some((h) => h.textContent === 'Call someone')",
        what="the home screen",
    )


async def ff_phase(tab: Tab, phase: str, within: float = CALL_WAIT) -> None:
    await tab.wait_for(
        f"window.visavis.store.get().call.phase === {phase!r}", within, f"Firefox in {phase}"
    )


async def ff_frames(tab: Tab) -> int:
    stats = await tab.eval("window.visavis.stats()")
    return int(stats["framesDecoded"]) if stats else 0


async def ff_code(tab: Tab) -> str:
    code: str = await tab.wait_for(
        "document.querySelector('[data-code]')?.dataset.code", what="Firefox's code"
    )
    return code


async def chromium_code(device: Device) -> str:
    locator = device.page.locator("[data-code]")
    await expect(locator).to_be_visible(timeout=CALL_WAIT * 1000)
    return await locator.get_attribute("data-code") or ""


async def grows(read: Callable[[], Awaitable[int]], by: int, what: str) -> int:
    """Wait until ``read()`` has grown by ``by`` from now; the final value."""
    start = await read()
    return int(await until_async(lambda: _at_least(read, start + by), what, CALL_WAIT, every=0.3))


async def _at_least(read: Callable[[], Awaitable[int]], wanted: int) -> int:
    value = await read()
    return value if value >= wanted else 0


def no_errors(tab: Tab, firefox: Firefox) -> None:
    assert tab.errors == [], tab.errors
    assert firefox.errors == [], firefox.errors


# -- the tests ------------------------------------------------------------------------------


async def test_firefox_signs_up_and_in_and_every_main_screen_renders(
    server: Served, firefox: Firefox
) -> None:
    signup_rest(server.http_url, "fay@example.com", "Fay Friend")
    tab = await ff_open(firefox, server)
    try:
        # Sign up through the form.
        await tab.click("Create account")
        await tab.fill("Handle (email or phone)", "fox@example.com")
        await tab.fill("Your name", "Fox Firefox")
        await tab.fill("Password", PASSWORD)
        await tab.fill("Name this device", "fox firefox")
        await tab.click("Create account", nth=-1)
        await ff_online(tab)

        # Find a person; favourite her.
        await tab.fill("Handle", "fay@example.com")
        await tab.click("Find")
        await tab.wait_for("document.body.innerText.includes('reachable')", what="search result")
        await tab.click("Add Fay Friend to favourites")
        await tab.wait_for(
            "!!document.querySelector('[aria-label=\"Remove Fay Friend from favourites\"]')",
            what="Fay starred",
        )

        # Camera preview: Firefox's fake camera plays in the preview.
        await tab.click("Preview camera")
        await tab.wait_for(
            "[...document.querySelectorAll('video')].some((v) => v.videoWidth > 0"
            " && v.currentTime > 0)",
            what="the preview playing",
        )
        await tab.click("Stop preview")

        await tab.click("Devices")
        await tab.wait_for(
            "document.querySelectorAll('.devices li').length === 1", what="one device listed"
        )
        await tab.click("History")
        await tab.wait_for("document.body.innerText.includes('No calls yet')", what="history")
        await tab.click("Contacts")

        # Sign out (this device's token is revoked) and back in.
        await tab.click("Sign out")
        await tab.wait_for("!!document.querySelector('form input[name=handle]')", what="signed out")
        await ff_sign_in(tab, "fox@example.com", "fox again")
        assert await tab.eval("window.visavis.store.get().session.user.handle") == (
            "fox@example.com"
        )
        no_errors(tab, firefox)
    finally:
        await tab.close()


async def test_one_to_one_between_firefox_and_chromium_both_ways(
    server: Served, firefox: Firefox, browser: Browser
) -> None:
    signup_rest(server.http_url, "fern@example.com", "Fern Firefox")
    signup_rest(server.http_url, "cole@example.com", "Cole Chromium")
    fern = await ff_open(firefox, server)
    cole = await open_device(browser, server.http_url, max_height=360)
    try:
        await ff_sign_in(fern, "fern@example.com", "fern firefox")
        await sign_in(cole, "cole@example.com", "cole chromium")

        for caller in ("firefox", "chromium"):
            if caller == "firefox":
                await fern.fill("Handle", "cole@example.com")
                await fern.click("Find")
                await fern.click("Video call Cole Chromium")
                await expect(cole.page.get_by_role("alertdialog")).to_be_visible()
                await cole.page.get_by_role("button", name="Video", exact=True).click()
            else:
                await cole.find_and_call("fern@example.com")
                await fern.wait_for(
                    "!!document.querySelector('[role=alertdialog]')", what="Firefox rings"
                )
                await fern.click("Video")
            await ff_phase(fern, "in_call")
            await cole.wait_phase("in_call", within=CALL_WAIT)
            # End to end checked: both show the same code (each verified the other's
            # signed DTLS fingerprint before applying its description).
            code = await ff_code(fern)
            assert code == await chromium_code(cole)
            # Media both ways: inbound frames decoded grow on both sides.
            await grows(lambda: ff_frames(fern), 15, f"Firefox decoding ({caller} called)")
            await grows(cole.frames_decoded, 15, f"Chromium decoding ({caller} called)")
            await fern.click("End")
            await cole.wait_phase("idle", within=CALL_WAIT)
            await ff_phase(fern, "idle")

        no_errors(fern, firefox)
        assert cole.errors == [], cole.errors
    finally:
        await fern.close()
        await cole.close()


async def test_effects_in_firefox_video_effect_through_the_canvas_path_and_reactions(
    server: Served, firefox: Firefox, browser: Browser
) -> None:
    """Firefox has no MediaStreamTrackProcessor: the video effect takes the canvas
    captureStream path, and (no WebGL here) gives up, says why and sends the camera again;
    voice isolation gives up too (no running AudioContext); reactions go both ways."""
    signup_rest(server.http_url, "flo@example.com", "Flo Firefox")
    signup_rest(server.http_url, "cid@example.com", "Cid Chromium")
    flo = await ff_open(firefox, server)
    cid = await open_device(browser, server.http_url, max_height=360)
    try:
        await ff_sign_in(flo, "flo@example.com", "flo firefox")
        await sign_in(cid, "cid@example.com", "cid chromium")
        await flo.fill("Handle", "cid@example.com")
        await flo.click("Find")
        await flo.click("Video call Cid Chromium")
        await expect(cid.page.get_by_role("alertdialog")).to_be_visible()
        await cid.page.get_by_role("button", name="Video", exact=True).click()
        await ff_phase(flo, "in_call")
        await cid.wait_phase("in_call", within=CALL_WAIT)
        await grows(cid.frames_decoded, 10, "Chromium decoding Firefox")

        # Voice isolation cannot start here: headless Firefox on a machine with no audio
        # device never starts an AudioContext (resume() stays pending). After a bounded
        # wait the client says so and asks for the browser's own noise suppression back,
        # so the raw microphone, which keeps going out, is not sent with neither.
        await flo.wait_for(
            "(window.visavis.effects.note || '').includes('voice isolation unavailable')",
            within=CALL_WAIT,
            what="voice isolation gives up and says so",
        )
        assert await flo.eval(
            "window.visavis.media.outgoing('audio') === window.visavis.media.audio"
        )
        assert await flo.eval(
            "window.visavis.media.audio.getConstraints().noiseSuppression === true"
        )

        # Blur from the call's Effects panel: Firefox takes the canvas captureStream path,
        # and headless Firefox here gives the effect's worker no WebGL, which MediaPipe's
        # segmentation needs. The effect gives up at once: the camera's own track goes out
        # again, the toggle is back to Off, and the person is told why (in the panel, in a
        # notice shown with the panel closed, and in the live region).
        unavailable = "background effects unavailable: this browser gives it no WebGL"
        await flo.click("Effects")
        await flo.click("Blur")
        gave_up = await flo.wait_for(
            "window.visavis.effects.gaveUp", within=CALL_WAIT, what="the video effect gives up"
        )
        print(f"Firefox blur: {gave_up}")
        assert gave_up["backend"] == "canvas" and gave_up["note"] == unavailable, gave_up
        await flo.wait_for(
            "window.visavis.media.outgoing('video') === window.visavis.media.video",
            what="the camera's own track sent again",
        )
        assert await flo.eval("window.visavis.effects.video === null")
        assert await flo.eval("window.visavis.effects.prefs.video") == "off"
        pressed = (
            "document.querySelector('[data-effect=background-{}]').getAttribute('aria-pressed')"
        )
        await flo.wait_for(
            f"{pressed.format('off')} === 'true' && {pressed.format('blur')} === 'false'",
            what="the toggle back to Off",
        )
        said = json.dumps(unavailable)
        await flo.wait_for(
            f"document.querySelector('.effects-note')?.textContent === {said}",
            what="the panel says why",
        )
        assert await flo.eval("window.visavis.store.get().announcement") == unavailable
        await flo.click("Effects")  # closed: the notice stays in view until dismissed
        notice = "document.querySelector('[data-effects-notice]')?.textContent"
        assert unavailable in await flo.wait_for(notice, what="the notice")
        await grows(cid.frames_decoded, 30, "Chromium decoding Firefox's camera")
        await flo.click("Dismiss")
        await flo.wait_for(f"!{notice}", what="the notice dismissed")

        # Reactions: Alt+1 (hearts) from Firefox, fireworks from Chromium's menu.
        await flo.wait_for("window.visavis.effects.canReact", what="Firefox can react")
        await cid.page.wait_for_function(
            "() => window.visavis.effects.canReact", timeout=CALL_WAIT * 1000
        )
        await flo.press("1", "ALT")
        await cid.page.wait_for_function(
            "() => window.visavis.effects.played.some((p) => p.kind === 'hearts')",
            timeout=CALL_WAIT * 1000,
        )
        assert {"who": "peer", "kind": "hearts", "on": "remote"} in await cid.page.evaluate(
            "window.visavis.effects.played"
        )
        controls = cid.page.get_by_role("navigation", name="Call controls")
        await controls.get_by_role("button", name="React").click()
        await cid.page.get_by_role("menuitem", name="Fireworks").click()
        await flo.wait_for(
            "window.visavis.effects.played.some((p) => p.kind === 'fireworks')",
            what="Firefox plays Chromium's fireworks",
        )
        played = await flo.eval("window.visavis.effects.played")
        assert {"who": "peer", "kind": "fireworks", "on": "remote"} in played
        assert {"who": "self", "kind": "hearts", "on": "self mirror"} in played

        await flo.click("End")
        await ff_phase(flo, "idle")
        no_errors(flo, firefox)
        assert cid.errors == [], cid.errors
    finally:
        await flo.close()
        await cid.close()


async def received(read: Callable[[], Awaitable[dict[str, Any]]], participant: str) -> int:
    """Video frames decoded of ``participant`` (only if its audio arrives too)."""
    entry = (await read()).get(participant) or {}
    return int(entry.get("video", 0)) if entry.get("audio", 0) > 0 else 0


async def test_group_call_firefox_and_chromium_through_the_sfu_with_sframe(
    server: Served, firefox: Firefox, browser: Browser, tmp_path: Path
) -> None:
    signup_rest(server.http_url, "gwen@example.com", "Gwen Firefox")
    signup_rest(server.http_url, "hal@example.com", "Hal Chromium")
    signup_rest(server.http_url, "ivy@example.com", "Ivy Chromium")
    gwen = await ff_open(firefox, server)
    hal = await open_device(browser, server.http_url, max_height=360)
    ivy = await open_device(browser, server.http_url, max_height=360)
    try:
        await ff_sign_in(gwen, "gwen@example.com", "gwen firefox")
        await sign_in(hal, "hal@example.com", "hal chromium")
        await sign_in(ivy, "ivy@example.com", "ivy chromium")
        # Firefox starts a group call (through the SFU); Hal answers, Ivy declines: the
        # call goes on through the SFU with Firefox and Chromium.
        await gwen.fill("Handles, separated by commas", "hal@example.com, ivy@example.com")
        await gwen.click("Call all")
        await expect(hal.page.get_by_role("alertdialog")).to_be_visible()
        await expect(ivy.page.get_by_role("alertdialog")).to_be_visible()
        await ivy.page.get_by_role("button", name="Decline").click()
        await hal.page.get_by_role("button", name="Video", exact=True).click()
        await ff_phase(gwen, "in_call")
        await hal.wait_phase("in_call", within=CALL_WAIT)

        # Firefox's worker runs behind RTCRtpScriptTransform (no encoded streams there).
        assert await gwen.eval("!('createEncodedStreams' in RTCRtpSender.prototype)")
        # Every sending and receiving end of the group connection goes through it.
        assert await gwen.eval(
            "window.visavis.controller.pc.getTransceivers()"
            ".filter((t) => t.currentDirection === 'sendonly' || t.currentDirection === 'recvonly')"
            ".every((t) => (t.currentDirection === 'sendonly' ? t.sender : t.receiver).transform"
            " instanceof RTCRtpScriptTransform)"
        )
        gwen_id = await gwen.wait_for("window.visavis.controller.participantId", what="joined")
        hal_id = await hal.page.evaluate("window.visavis.controller.participantId")

        def gwen_reads() -> Awaitable[dict[str, Any]]:
            return gwen.eval("window.visavis.controller.received()")  # type: ignore[no-any-return]

        async def hal_reads() -> dict[str, Any]:
            result: dict[str, Any] = await hal.page.evaluate("window.visavis.controller.received()")
            return result

        await grows(lambda: received(gwen_reads, hal_id), 20, "Firefox decoding Chromium")
        await grows(lambda: received(hal_reads, gwen_id), 20, "Chromium decoding Firefox")

        # Once keys are in place, both workers encrypt and decrypt and drop nothing for an
        # unknown key or a failed tag (frames that arrive before the sender's key is
        # delivered are dropped as unknown_kid: expected, and over by now).
        async def both_stats() -> dict[str, Any]:
            return {"Firefox": await gwen.eval(STATS), "Chromium": await hal.page.evaluate(STATS)}

        before = await both_stats()
        await grows(lambda: received(gwen_reads, hal_id), 20, "Firefox decoding on")
        await grows(lambda: received(hal_reads, gwen_id), 20, "Chromium decoding on")
        after = await both_stats()
        for who in ("Firefox", "Chromium"):
            old, new = before[who]["frames"], after[who]["frames"]
            assert new["encrypted"] > old["encrypted"] + 20, (who, before, after)
            assert new["decrypted"] > old["decrypted"] + 20, (who, before, after)
            for reason in ("auth", "unknown_kid", "truncated"):
                assert new["dropped"].get(reason, 0) == old["dropped"].get(reason, 0), (
                    who,
                    reason,
                    before,
                    after,
                )
            assert after[who]["alerts"] == [], (who, after)
        assert await ff_code(gwen) == await chromium_code(hal)

        await gwen.click("End")
        await ff_phase(gwen, "idle")
        no_errors(gwen, firefox)
        assert hal.errors == [], hal.errors
    finally:
        await gwen.close()
        await hal.close()
        await ivy.close()
