"""Headless Chromium (fake camera, three simulcast layers) in an SFU room with aiortc
clients: Chromium receives and decodes them, they decode Chromium, and the SFU switches
each subscriber between Chromium's layers on keyframes as its bandwidth changes."""

from __future__ import annotations

import contextlib
import os
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


async def test_remb_subscriber_gets_the_top_layer_back(
    sfu: SfuServer, token: Callable[..., str]
) -> None:
    """An aiortc subscriber (REMB, no TWCC) shows Chromium as a thumbnail, so its REMB
    settles near the lowest layer's rate; shown large again, the SFU pads its slot until
    its REMB covers the top layer, and it gets the top layer back (issue 11)."""
    playwright_api = pytest.importorskip("playwright.async_api")
    if not HAVE_CHROMIUM:
        pytest.skip("Debian chromium is not installed")
    viewer = SfuSession(sfu.control_url, token("viewer"))
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            with page_server() as url:
                page = await browser.new_page()
                await page.goto(url)
                await page.evaluate("([u, t]) => run(u, t)", [sfu.control_url, token("chrome")])
                chrome_id = await until_async(
                    lambda: page.evaluate("window.state.participant_id"),
                    "Chromium to join",
                    30,
                    every=0.25,
                )
                room = next(iter(sfu.rooms.values()))
                chrome = room.participants[chrome_id]

                async def publishing() -> bool:
                    return any(p.is_video for p in chrome.producers.values())

                await until_async(publishing, "Chromium to publish", 30, every=0.25)
                video = next(p for p in chrome.producers.values() if p.is_video)
                await viewer.join()
                await viewer.set_layout([], [chrome_id])  # a thumbnail from the start
                me = room.participants[viewer.participant_id or ""]
                consumer = None

                async def thumbnail_settled() -> bool:
                    nonlocal consumer
                    consumer = next((c for c in me.consumers.values() if c.producer is video), None)
                    now = time.monotonic()
                    rates = [rate or 0.0 for rate in video.layer_bitrates(now)]
                    return bool(
                        consumer is not None
                        and consumer.selector.current == 0
                        and me.bwe.remb(now) is not None
                        and 50_000 < rates[0] < rates[1] < rates[2]  # Chromium ramped up
                        # what the allocator has does not fit the top layer
                        and me.bwe.estimate(now) + 40_000 < rates[2] * 0.9
                        and viewer.frames[chrome_id]["video"] >= 10
                    )

                await until_async(
                    thumbnail_settled, "the thumbnail's REMB to settle", 40, every=0.25
                )
                assert consumer is not None
                probes_before = sfu.stats.probe_packets
                remb_before = me.bwe.remb(time.monotonic())
                estimate_before = me.bwe.estimate(time.monotonic())
                rates = [round((r or 0) / 1000) for r in video.layer_bitrates(time.monotonic())]
                shown = time.monotonic()
                await viewer.set_layout([chrome_id], [])

                async def on_top() -> bool:
                    return consumer is not None and consumer.selector.current == 2

                await until_async(on_top, "the top layer back", 45, every=0.25)
                took = time.monotonic() - shown
                frames = viewer.frames[chrome_id]["video"]
                await viewer.wait_for(lambda: viewer.frames[chrome_id]["video"] >= frames + 10, 20)
                print(
                    f"REMB_PROBE layers_kbps={rates} remb_before={remb_before} "
                    f"estimate_before={estimate_before} "
                    f"remb_after={me.bwe.remb(time.monotonic())} seconds_to_top={took:.1f} "
                    f"probe_packets={sfu.stats.probe_packets - probes_before} "
                    f"probes={me.remb_prober.probes} load={os.getloadavg()[0]:.1f}"
                )
                assert sfu.stats.probe_packets > probes_before
                assert me.remb_prober.probes >= 1
        finally:
            await browser.close()
            await viewer.close()
