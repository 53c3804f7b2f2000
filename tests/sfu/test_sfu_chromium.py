"""Headless Chromium (fake camera, three simulcast layers) in an SFU room with aiortc
clients: Chromium receives and decodes them, they decode Chromium, and the SFU switches
each subscriber between Chromium's layers on keyframes as its bandwidth changes."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, CHROMIUM_ARGS, HAVE_CHROMIUM, static_site
from tests.waiting import until_async
from visavis.client.sfu_session import PatternTrack, SfuSession, ToneTrack
from visavis.sfu.server import SfuServer
from visavis.signaling.web import WEB_DIR

pytestmark = [pytest.mark.browser, pytest.mark.interop]

ARGS = [
    *CHROMIUM_ARGS,
    "--allow-loopback-in-peer-connection",
    # Chromium caps simulcast layers by resolution (two at 640x480); lift the cap.
    "--force-fieldtrials=WebRTC-LegacySimulcastLayerLimit/Disabled/",
]


@contextlib.contextmanager
def page_server() -> Iterator[str]:
    """This directory's sfu_page.html on 127.0.0.1 (a secure context for getUserMedia),
    the web client's modules under /web/ (its E2EE and room-codec options import them)."""
    with static_site(Path(__file__).parent, mounts={"/web/": WEB_DIR}) as origin:
        yield f"{origin}/sfu_page.html"


async def test_chromium_simulcast_in_room(sfu: SfuServer, token: Callable[..., str]) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    if not HAVE_CHROMIUM:
        pytest.skip("Debian chromium is not installed")
    clients: list[SfuSession] = []
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            with page_server() as url:
                for index, user in enumerate(["alice", "bob"]):
                    client = SfuSession(
                        sfu.control_url,
                        token(user),
                        audio=ToneTrack(0.3),
                        video=PatternTrack(seed=index),
                    )
                    clients.append(client)
                    await client.join()
                page = await browser.new_page()
                await page.goto(url)
                await page.evaluate("([u, t]) => run(u, t)", [sfu.control_url, token("chrome")])

                # Chromium decodes both aiortc clients (video frames, audio samples).
                async def chrome_receives() -> bool:
                    got = await page.evaluate("received()")
                    return all(
                        got.get(c.participant_id, {}).get("video", 0) >= 10
                        and got.get(c.participant_id, {}).get("audio", 0) > 0
                        for c in clients
                    )

                await until_async(
                    chrome_receives, "Chromium to decode the aiortc clients", 30, every=0.25
                )
                chrome_id = await page.evaluate("window.state.participant_id")
                # Chromium sends three layers; the SFU learnt their SSRCs from RID.
                room = next(iter(sfu.rooms.values()))
                chrome = room.participants[chrome_id]
                video = next(p for p in chrome.producers.values() if p.is_video)
                assert [layer.rid for layer in video.layers] == ["q", "h", "f"]

                async def layers_active() -> bool:
                    return all(
                        layer.ssrc is not None and layer.received > 0 for layer in video.layers
                    )

                await until_async(
                    layers_active, "all three simulcast layers to arrive", 45, every=0.25
                )
                # The aiortc clients decode Chromium.
                for c in clients:
                    await c.wait_for(lambda c=c: c.frames[chrome_id]["video"] >= 10, 20)
                    await c.wait_for(lambda c=c: c.frames[chrome_id]["audio"] >= 10, 10)
                # Bandwidth drives the layer: starve alice's downlink, then restore it.
                alice = room.participants[clients[0].participant_id or ""]
                consumer = next(c for c in alice.consumers.values() if c.producer is video)

                async def on_layer(layer: int) -> bool:
                    alice.bwe.on_remb(budget, time.monotonic())
                    return consumer.selector.current == layer

                budget = 120_000
                await until_async(
                    lambda: on_layer(0), "a switch down to the lowest layer", 15, every=0.25
                )
                frames = clients[0].frames[chrome_id]["video"]
                await clients[0].wait_for(
                    lambda: clients[0].frames[chrome_id]["video"] >= frames + 10, 30
                )
                budget = 20_000_000
                await until_async(
                    lambda: on_layer(2), "a switch up to the highest layer", 20, every=0.25
                )
                frames = clients[0].frames[chrome_id]["video"]
                await clients[0].wait_for(
                    lambda: clients[0].frames[chrome_id]["video"] >= frames + 10, 30
                )
                assert not (await page.evaluate("window.state.errors"))
        finally:
            await browser.close()
            for c in clients:
                await c.close()
