"""Call links in the browser, against the real `visavis serve`: Lia makes a link; Gus,
who has no account, opens it in his own browser profile, gives his name and waits in the
lobby; Lia opens the call and admits him; each decodes the other's video through the SFU
and Lia sees him marked as a guest; the call is end-to-end encrypted with him too (an
ephemeral identity, keys over /api/guest/e2ee, shown as unverified on both sides, one
verification code). When Lia ends the call, Gus's page says so; once Lia
turns the link off, opening it again shows a clear page (not a form, not a stack trace).
"""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from tests.served import Served
from tests.waiting import until_async
from tests.web.clients import Device, open_device, sign_in, signup_rest
from tests.web.test_group import wait_decoding

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="package")]


async def test_guest_joins_through_a_link_after_being_admitted_and_not_after_revocation(
    server: Served, browser: Browser
) -> None:
    signup_rest(server.http_url, "lia@example.com", "Lia")
    lia = await open_device(browser, server.http_url, max_height=360)
    devices = [lia]
    try:
        await sign_in(lia, "lia@example.com", "Lia's laptop")
        await lia.page.get_by_role("button", name="Make a call link").click()
        field = lia.page.get_by_role("textbox", name="Call link")
        await expect(field).to_be_visible()
        url = await field.input_value()
        assert url.startswith(f"{server.http_url}/#join="), url
        path = url.removeprefix(server.http_url)

        # Gus has no account: a fresh browser profile opening the link.
        gus = await open_device(browser, server.http_url, max_height=360, path=path)
        devices.append(gus)
        await expect(gus.page.get_by_role("heading", name="Lia's call")).to_be_visible()
        await gus.page.get_by_label("Your name").fill("Gus")
        await gus.page.get_by_role("button", name="Ask to join").click()
        await expect(gus.page.locator(".lobby-wait")).to_contain_text("let you in, Gus")

        # Lia hears of him on her home screen, opens the call and lets him in.
        notice = lia.page.locator(".lobby-notice")
        await expect(notice).to_contain_text("Gus is waiting on your call link")
        await notice.get_by_role("button", name="Open the call").click()
        await lia.wait_phase("in_call", within=30)
        await lia.page.get_by_role("button", name="Admit Gus").click()
        await gus.wait_phase("in_call", within=30)
        # End to end encrypted with Gus too: an ephemeral identity, unverified on both sides.
        for device in (gus, lia):

            async def keyed(d: Device = device) -> bool:
                got = await d.page.evaluate("window.visavis.e2ee.stats()")
                return bool(got) and got["frames"]["decrypted"] >= 10 and got["code"] != ""

            await until_async(keyed, "keys agreed with the guest, frames decrypted", 30)
            e2ee = await device.page.evaluate("window.visavis.e2ee.stats()")
            assert e2ee["alerts"] == [] and e2ee["refused"] == {}, e2ee
        await wait_decoding(gus, 1)
        await wait_decoding(lia, 1)
        await expect(lia.page.locator(".unverified")).to_contain_text("Unverified guest: Gus")
        await expect(gus.page.locator(".unverified")).to_contain_text("You joined as a guest")
        codes = [await d.page.locator("[data-code]").get_attribute("data-code") for d in (gus, lia)]
        assert codes[0] and codes[0] == codes[1]
        await expect(lia.page.locator(".tile figcaption")).to_have_text("Gus (guest)")
        await expect(gus.page.locator(".tile figcaption")).to_have_text("lia@example.com")

        # Lia adds Max; when he hangs up, Gus (who gets no call.participant events) hears
        # it from the SFU and draws a fresh key, so Max cannot read what Gus sends next.
        signup_rest(server.http_url, "max@example.com", "Max")
        max_ = await open_device(browser, server.http_url, max_height=360)
        devices.append(max_)
        await sign_in(max_, "max@example.com", "Max's laptop")
        await lia.page.get_by_role("button", name="Add person").click()
        await lia.page.get_by_label("Add someone to this call").fill("max@example.com")
        await lia.page.get_by_role("button", name="Ring", exact=True).click()
        await expect(max_.page.get_by_role("alertdialog")).to_be_visible()
        await max_.page.get_by_role("button", name="Video", exact=True).click()
        await max_.wait_phase("in_call", within=45)

        async def gus_peers(count: int) -> bool:
            got = await gus.page.evaluate("window.visavis.e2ee.stats()")
            assert got, await gus.page.evaluate("JSON.stringify(window.visavis.state.call)")
            return len(got["peers"]) == count

        await until_async(lambda: gus_peers(2), "Gus holds Lia's and Max's keys", 45)
        await max_.page.locator('[data-action="end"]').click()
        await until_async(lambda: gus_peers(1), "Gus dropped Max's key after he left", 30)
        before = (await gus.page.evaluate("window.visavis.e2ee.stats()"))["frames"]["decrypted"]

        async def still_decrypting() -> bool:
            got = await gus.page.evaluate("window.visavis.e2ee.stats()")
            return bool(got["frames"]["decrypted"] >= before + 10 and got["alerts"] == [])

        await until_async(still_decrypting, "Gus decrypts Lia after the rekey", 30)

        # Lia ends the call: it is over for Gus too.
        await lia.page.locator('[data-action="end"]').click()
        await expect(gus.page.get_by_role("heading", name="The call has ended")).to_be_visible()
        await lia.wait_phase("idle")
        # Her history names everyone who came in, Gus as a guest.
        await lia.go_home_tab("History")
        await expect(lia.page.locator(".history li").first.locator(".who strong")).to_have_text(
            "Max, Gus (guest)"
        )
        await lia.go_home_tab("Contacts")

        # Lia turns the link off: opening it again shows why it cannot be used.
        await lia.page.get_by_role("button", name="Turn off this call link").click()
        await expect(lia.page.get_by_role("textbox", name="Call link")).to_have_count(0)
        late = await open_device(browser, server.http_url, path=path)
        devices.append(late)
        await expect(
            late.page.get_by_role("heading", name="This call link cannot be used")
        ).to_be_visible()
        await expect(late.page.get_by_role("alert")).to_contain_text("turned off")
        await expect(late.page.get_by_label("Your name")).to_have_count(0)
        for device in devices:
            assert device.errors == [], device.errors
    finally:
        for device in devices:
            await device.close()
