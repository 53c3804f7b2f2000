"""Browsers and Python SDK bots in end-to-end encrypted group calls against the real
`visavis serve` (a subprocess, as the README starts it; test_browser_e2ee.py runs an
in-process node so that it can tap the SFU and modify signaling):

- a signed-in browser and a bot (GroupE2ee) in one group call: each decrypts and
  decodes the other, one verification code;
- a bot opens its call link's call, admits a guest (a browser without an account, with
  an ephemeral identity): they agree keys through the guest channel, decode each other,
  show the same verification code, the bot lists the guest as unverified; when the
  guest leaves, the bot draws a fresh sender key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, expect

from tests.browser import chromium
from tests.e2ee.test_group_sdk import bots_at
from tests.served import Served, served_fixture
from tests.waiting import until, until_async
from tests.web.clients import Device, open_device, sign_in, signup_rest
from visavis.client.links import admit, create_link, open_link_call
from visavis.signaling import messages as m

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]
STATS = "window.visavis.e2ee.stats()"


server = served_fixture("e2ee-served")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


async def received(device: Device) -> dict[str, Any]:
    got: dict[str, Any] = await device.page.evaluate(
        "window.visavis.controller ? window.visavis.controller.received() : {}"
    )
    return got


async def decodes(device: Device, pid: str | None, what: str) -> None:
    """Until ``device`` decoded 10 video frames of participant ``pid`` (polled)."""

    async def check() -> bool:
        return bool((await received(device)).get(pid or "", {}).get("video", 0) >= 10)

    await until_async(check, what, 60)


async def test_browser_and_bot_in_an_encrypted_call_of_visavis_serve(
    server: Served, browser: Browser, tmp_path: Path
) -> None:
    (bot,) = await bots_at(server.http_url, tmp_path, ["bot"])
    signup_rest(server.http_url, "ann@example.com", "Ann")
    signup_rest(server.http_url, "ghost@example.com", "Ghost")  # rung, never answers
    ann = await open_device(browser, server.http_url, max_height=360)
    try:
        await sign_in(ann, "ann@example.com", "laptop")
        invite = await bot.session.request(
            "call.invite", handles=["ann@example.com", "ghost@example.com"]
        )
        assert invite.call_id is not None
        await expect(ann.page.get_by_role("heading", name="Bot")).to_be_visible()
        await ann.page.get_by_role("button", name="Video", exact=True).click()
        await bot.enter(invite.call_id, 0, loud=True)
        sfu, e2ee = bot.sfu, bot.e2ee
        assert sfu is not None and e2ee is not None
        await ann.wait_phase("in_call", within=40)
        ann_pid = await ann.page.evaluate("window.visavis.controller.participantId")
        await sfu.wait_for(lambda: sfu.frames[ann_pid]["video"] >= 10, 60)
        await decodes(ann, sfu.participant_id, "the browser decodes the bot's video")
        stats = await ann.page.evaluate(STATS)
        assert stats["frames"]["encrypted"] > 20 and stats["frames"]["decrypted"] > 20
        assert stats["alerts"] == [] and stats["refused"] == {}
        assert e2ee.keyring.stats.decrypted > 20 and not e2ee.alerts
        await expect(ann.page.locator(f'[data-code="{e2ee.verification_code}"]')).to_be_visible()
        await ann.page.get_by_role("button", name="End").click()
        await ann.wait_phase("idle")
        assert ann.errors == []
    finally:
        await ann.close()
        await bot.close()


async def test_bot_and_guest_of_its_call_link_decrypt_each_other(
    server: Served, browser: Browser, tmp_path: Path
) -> None:
    (bot,) = await bots_at(server.http_url, tmp_path, ["host"])
    link = await create_link(bot.session)
    assert link.token is not None and link.url.endswith(f"/#join={link.token}")
    gus = await open_device(
        browser, server.http_url, max_height=360, path=link.url.removeprefix(server.http_url)
    )
    try:
        call_id = await open_link_call(bot.session, link.id)
        await bot.enter(call_id, 0, loud=True)
        sfu, e2ee = bot.sfu, bot.e2ee
        assert sfu is not None and e2ee is not None

        await gus.page.get_by_label("Your name").fill("Gus")
        await gus.page.get_by_role("button", name="Ask to join").click()
        waiting = await bot.events.next(m.CallGuest, 30)
        while waiting.state != "waiting":
            waiting = await bot.events.next(m.CallGuest, 30)
        assert waiting.guest.display_name == "Gus"
        await admit(bot.session, call_id, waiting.guest.id)
        await gus.wait_phase("in_call", within=30)

        gus_pid = await gus.page.evaluate("window.visavis.controller.participantId")
        assert gus_pid == f"guest:Gus/{waiting.guest.id}"
        await sfu.wait_for(lambda: sfu.frames[gus_pid]["video"] >= 10, 60)
        await decodes(gus, sfu.participant_id, "the guest decodes the bot's video")
        assert e2ee.guests == {waiting.guest.id: "Gus"}
        assert e2ee.keyring.stats.decrypted > 20 and not e2ee.alerts
        stats = await gus.page.evaluate(STATS)
        assert stats["frames"]["decrypted"] > 20 and stats["alerts"] == []
        assert stats["code"] == e2ee.verification_code  # the guest's key is in the code
        await expect(gus.page.locator(".unverified")).to_contain_text("You joined as a guest")

        # The guest leaves: the bot draws a fresh key that the guest never gets.
        before = e2ee.keyring.current
        await gus.page.get_by_role("button", name="End").click()
        await until(
            lambda: e2ee.keyring.current.prefix != before.prefix,
            "a fresh sender key after the guest left",
            30,
        )
        assert e2ee.guests == {} and waiting.guest.id not in e2ee.keys.peers
    finally:
        await gus.close()
        await bot.close()
