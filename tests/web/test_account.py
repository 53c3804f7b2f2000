"""Account screens against the real `visavis serve`: favourites kept across a reload, the
device list (online or not) with revoking another device (that device is signed out at
once and says so), signing out (the token no longer opens anything), and errors that
say what to do."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from playwright.async_api import Browser, expect

from tests.served import Served
from tests.web.clients import open_device, sign_in, signup_rest

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="package")]


def me_status(http_url: str, token: str) -> int:
    request = urllib.request.Request(
        f"{http_url}/api/me", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_favourites_devices_revoke_and_sign_out(server: Served, browser: Browser) -> None:
    signup_rest(server.http_url, "vic@example.com", "Vic")
    signup_rest(server.http_url, "wes@example.com", "Wes")
    laptop = await open_device(browser, server.http_url)
    phone = await open_device(browser, server.http_url)
    devices = [laptop, phone]
    try:
        await sign_in(laptop, "vic@example.com", "Vic's laptop")
        await sign_in(phone, "vic@example.com", "Vic's phone")

        # Favourites: found by handle, starred, still there after a reload.
        page = laptop.page
        await page.get_by_role("searchbox", name="Handle").fill("wes@example.com")
        await page.get_by_role("button", name="Find").click()
        await page.get_by_role("button", name="Add Wes to favourites").click()
        await page.reload()
        favourites = page.get_by_role("region", name="Favourites")
        await expect(favourites.get_by_text("wes@example.com")).to_be_visible()
        await expect(favourites.get_by_role("button", name="Video call Wes")).to_be_visible()

        # The device list: both online, this one marked; revoke the phone from here.
        await laptop.go_home_tab("Devices")
        rows = page.locator("li[data-device]")
        await expect(rows).to_have_count(2)
        await expect(rows.filter(has_text="Vic's phone")).to_contain_text("online")
        await expect(rows.filter(has_text="Vic's laptop")).to_contain_text("this device")
        phone_token = await phone.page.evaluate(
            "JSON.parse(localStorage.getItem('visavis.session')).token"
        )
        await page.get_by_role("button", name="Sign out Vic's phone").click()
        await expect(rows).to_have_count(1)
        # The phone is signed out at once, and told why.
        await expect(phone.page.get_by_role("alert")).to_contain_text("This device was signed out")
        await expect(
            phone.page.get_by_role("button", name="Sign in", exact=True).last
        ).to_be_visible()
        assert me_status(server.http_url, phone_token) == 401

        # Signing out here revokes this device's token too.
        token = await page.evaluate("JSON.parse(localStorage.getItem('visavis.session')).token")
        assert me_status(server.http_url, token) == 200
        await page.get_by_role("button", name="Sign out").first.click()
        await expect(page.get_by_label("Password")).to_be_visible()
        assert me_status(server.http_url, token) == 401
        assert await page.evaluate("localStorage.getItem('visavis.session')") is None

        # Errors say what to do: a wrong password, a handle already taken.
        await page.get_by_label("Handle (email or phone)").fill("vic@example.com")
        await page.get_by_label("Password").fill("not the password")
        await page.get_by_role("button", name="Sign in", exact=True).last.click()
        await expect(page.get_by_role("alert")).to_contain_text("Wrong handle or password")
        await page.get_by_role("tab", name="Create account").click()
        await page.get_by_label("Handle (email or phone)").fill("wes@example.com")
        await page.get_by_label("Password").fill("correct horse battery")
        await page.get_by_role("button", name="Create account").last.click()
        await expect(page.get_by_role("alert")).to_contain_text("That handle is taken")
        for device in devices:
            assert device.errors == [], device.errors
    finally:
        for device in devices:
            await device.close()
