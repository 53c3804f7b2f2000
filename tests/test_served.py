"""`visavis serve` as the README runs it: every part starts, answers, and stops cleanly."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from tests.browser import launch_chromium
from tests.served import serve


def test_serve_starts_every_part_and_stops_cleanly(tmp_path: Path) -> None:
    with serve(tmp_path / "data") as server:
        assert set(server.endpoints) >= {"signaling", "relay", "sfu"}
        assert any(u.startswith("stun:") for u in server.endpoints["relay"])
        with urllib.request.urlopen(f"{server.http_url}/readyz", timeout=5) as response:
            assert json.load(response)["ready"] is True
        process = server.process
    assert process.returncode == 0, server.log()


async def test_chromium_opens_what_serve_serves(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    with serve(tmp_path / "data") as server:
        async with async_playwright() as playwright:
            browser = await launch_chromium(playwright)
            try:
                page = await browser.new_page()
                response = await page.goto(server.http_url + "/")
                assert response is not None and response.status == 200
                assert "visavis" in (await page.title()).lower()
            finally:
                await browser.close()
