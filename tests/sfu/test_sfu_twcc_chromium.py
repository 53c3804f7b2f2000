"""Chromium with transport-wide CC adapts its received layer when its link is throttled.

Two network namespaces joined by a veth pair: the SFU (``python -m visavis.sfu``, its
own process) and a publishing Chromium (fake camera, three simulcast layers) in one; a
subscribing Chromium in the other. The link from the SFU to the subscriber is shaped
with a token bucket (``tc qdisc ... tbf`` on the SFU's end of the veth), not by a
function call: the SFU only learns of it from the subscriber's TWCC feedback (and the
publisher's own estimate runs on the TWCC feedback the SFU sends it). The
subscriber's decoded frame height drops while throttled and climbs back once the
shaping is removed (the SFU probes with RTX and finds the room)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import netns
from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.waiting import until_async
from visavis.tokens import sign_token

pytestmark = [pytest.mark.browser, pytest.mark.netlab]

SECRET = "twcc-test-secret"
SFU_IP, SUB_IP = "10.213.77.1", "10.213.77.2"
PAGE = "http://127.0.0.1:9/sfu_page.html"  # served by Playwright's router: no server
ARGS = [
    *CHROMIUM_ARGS,
    "--force-fieldtrials=WebRTC-LegacySimulcastLayerLimit/Disabled/",  # 3 layers at 480p
    # The page comes from Playwright's router (no address), the SFU from 10.213.77.1:
    # without this, Local Network Access refuses the WebSocket as public -> private.
    "--disable-features=LocalNetworkAccessChecks",
]


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)


class Link:
    """Namespaces ``<p>-sfu`` (SFU + publisher) and ``<p>-sub`` (subscriber) on a veth."""

    def __init__(self) -> None:
        prefix = f"vvcc{secrets.token_hex(2)}"
        self.sfu, self.sub = f"{prefix}-sfu", f"{prefix}-sub"
        self.created: list[str] = []

    def __enter__(self) -> Link:
        try:
            for ns in (self.sfu, self.sub):
                sh("ip", "netns", "add", ns)
                self.created.append(ns)
                sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "link", "add", "vvs", "netns", self.sfu, "type", "veth", "peer", "name",
               "vvc", "netns", self.sub)  # fmt: skip
            for ns, dev, ip in ((self.sfu, "vvs", SFU_IP), (self.sub, "vvc", SUB_IP)):
                sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
                sh("ip", "-n", ns, "link", "set", dev, "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for ns in self.created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.created.clear()

    def throttle(self, bits_per_second: int) -> None:
        """Shape SFU -> subscriber: a token bucket with a 200 ms queue, then drops."""
        sh("ip", "netns", "exec", self.sfu, "tc", "qdisc", "replace", "dev", "vvs", "root",
           "tbf", "rate", f"{bits_per_second}bit", "burst", "8kb", "latency", "200ms")  # fmt: skip

    def unthrottle(self) -> None:
        sh("ip", "netns", "exec", self.sfu, "tc", "qdisc", "del", "dev", "vvs", "root")


def wrapper(tmp_path: Path, ns: str) -> str:
    """An executable that starts Debian's Chromium inside ``ns`` (for Playwright)."""
    path = tmp_path / f"chromium-{ns}"
    path.write_text(f'#!/bin/sh\nexec ip netns exec {ns} {CHROMIUM} "$@"\n')
    path.chmod(0o755)
    return str(path)


def token(user: str) -> str:
    claims = {"room": "twcc", "call": "c", "user": user, "device": "d"}
    return sign_token(SECRET, claims, now=time.time(), ttl=600)


class Sfu:
    """``python -m visavis.sfu`` inside a namespace; ``stats()`` reads its counters."""

    def __init__(self, proc: asyncio.subprocess.Process, ready: dict[str, Any]) -> None:
        self.proc = proc
        self.control_url = str(ready["control_url"])

    async def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"stats\n")
        await self.proc.stdin.drain()
        data: dict[str, Any] = json.loads(await asyncio.wait_for(self.proc.stdout.readline(), 20))
        return data


async def start_sfu(ns: str, tmp_path: Path) -> Sfu:
    env = dict(
        os.environ,
        VISAVIS_SHARED_SECRET=SECRET,
        VISAVIS_DATA_DIR=str(tmp_path),
        VISAVIS_SFU__HOST=SFU_IP,
        VISAVIS_SFU__PORT="0",
        VISAVIS_SFU__MEDIA_PORT="0",
        VISAVIS_SFU__TCP_PORT="off",
        VISAVIS_SFU__ALLOWED_NETWORKS=json.dumps(["10.213.77.0/24"]),
    )
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns, sys.executable, "-m", "visavis.sfu",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
    except BaseException:
        proc.terminate()
        await proc.wait()
        raise
    return Sfu(proc, ready)


@pytest.fixture
def link() -> Iterator[Link]:
    why = netns.available()
    if why:
        pytest.skip(why)
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    with Link() as made:
        yield made


@pytest.fixture
async def sfu(link: Link, tmp_path: Path) -> AsyncIterator[Sfu]:
    server = await start_sfu(link.sfu, tmp_path)
    try:
        yield server
    finally:
        if server.proc.returncode is None:
            server.proc.terminate()
        await asyncio.wait_for(server.proc.wait(), 20)


async def open_page(playwright: Any, executable: str) -> tuple[Any, Any]:
    browser = await playwright.chromium.launch(executable_path=executable, headless=True, args=ARGS)
    page = await browser.new_page()
    html = (Path(__file__).parent / "sfu_page.html").read_text()
    await page.route(PAGE, lambda route: route.fulfill(body=html, content_type="text/html"))
    await page.goto(PAGE)
    return browser, page


async def layer_rates(publisher: Any) -> dict[str, float]:
    """Each simulcast layer's rate (bit/s) as the publisher sends it, over 2 s windows,
    once its own estimate has grown enough for the top layer to stand apart from the
    lowest (within 60 s)."""
    rates: dict[str, float] = {}
    deadline = time.monotonic() + 60
    while not rates or rates["f"] < rates["q"] + 100_000:
        assert time.monotonic() < deadline, f"the publisher's layers: {rates}"
        first = await publisher.evaluate("sentBytes()")
        await asyncio.sleep(2)  # a measurement window, not a wait for readiness
        second = await publisher.evaluate("sentBytes()")
        rates = {
            rid: (second[rid][0] - first[rid][0]) * 8 / ((second[rid][1] - first[rid][1]) / 1e3)
            for rid in ("q", "h", "f")
        }
    return rates


async def throttle_cycle(
    link: Link,
    sfu: Sfu,
    rates: dict[str, float],
    dropped: Callable[[], Any],
    full: Callable[[], Any],
    drop_within: float,
) -> tuple[int, float, float, dict[str, Any], dict[str, Any]]:
    """Throttle the subscriber's link below the top layer plus audio (~40 kbit/s), above
    the lowest's; wait (``drop_within`` s) for the layer to drop, open the link again and
    wait for the top layer, which probing must have brought back. Returns the limit, the
    seconds to drop and to come back, and the SFU's stats while throttled and after."""
    limit = int((rates["q"] + rates["f"]) / 2 + 40_000)
    link.throttle(limit)
    throttled = time.monotonic()
    await until_async(dropped, f"the layer to drop under {limit} bit/s", drop_within, every=0.25)
    down = time.monotonic() - throttled
    during = await sfu.stats()
    link.unthrottle()
    opened = time.monotonic()
    await until_async(full, "the 480p layer to come back", 90, every=0.25)
    recovered = time.monotonic() - opened
    after = await sfu.stats()
    assert after["probe_packets"] > during["probe_packets"], after
    return limit, down, recovered, during, after


async def test_chromium_layer_follows_a_throttled_link(
    link: Link, sfu: Sfu, tmp_path: Path
) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    browsers: list[Any] = []
    async with playwright_api.async_playwright() as p:
        try:
            pub_browser, publisher = await open_page(p, wrapper(tmp_path, link.sfu))
            browsers.append(pub_browser)
            await publisher.evaluate("([u, t]) => run(u, t)", [sfu.control_url, token("pub")])
            pub_id = await until_async(
                lambda: publisher.evaluate("window.state.participant_id"),
                "publisher joined",
                30,
                every=0.25,
            )
            sub_browser, subscriber = await open_page(p, wrapper(tmp_path, link.sub))
            browsers.append(sub_browser)
            await subscriber.evaluate(
                "([u, t]) => run(u, t, {publish: false})", [sfu.control_url, token("sub")]
            )

            async def height() -> int:
                got = await subscriber.evaluate("(id) => videoIn(id)", pub_id)
                return int(got["frameHeight"]) if got else 0

            async def full() -> bool:
                return await height() == 480

            began = time.monotonic()
            await until_async(full, "the subscriber to receive the 480p layer", 90, every=0.25)
            ramp = time.monotonic() - began
            rates = await layer_rates(publisher)
            await until_async(full, "the subscriber to be back on the 480p layer", 30, every=0.25)
            before = await sfu.stats()
            assert before["twcc_feedback"] > 10, before  # the subscriber sends TWCC
            assert before["twcc_feedback_sent"] > 10, before  # the publisher gets it
            limit, dropped, recovered, during, after = await throttle_cycle(
                link, sfu, rates, lambda: low(height), full, 45
            )
            assert during["congestion_signals"] > before["congestion_signals"], during
            kbit = {rid: round(rate / 1e3) for rid, rate in rates.items()}
            print(
                f"\nlayer rates {kbit} kbit/s;"
                f" throttle {limit // 1000} kbit/s; first 480p after {ramp:.1f} s;"
                f" dropped after {dropped:.1f} s; back to 480p {recovered:.1f} s after"
                f" unthrottling; overuse signals {after['congestion_signals']},"
                f" probe packets {after['probe_packets']}; load {os.getloadavg()[0]:.1f}"
            )
            assert not await subscriber.evaluate("window.state.errors")
        finally:
            for browser in browsers:
                await browser.close()


async def low(height: Callable[[], Any]) -> bool:
    value = await height()
    return 0 < value < 480


class Viewer:
    """``tests.sfu.remb_viewer`` (aiortc) inside a namespace; its reports are read as
    they come, ``height(pid)`` is the last size it decoded of ``pid``'s video."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.last: dict[str, Any] = {"sizes": {}, "frames": {}}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.last = json.loads(line)

    async def height(self, pid: str) -> int:
        if self.reader.done():
            raise AssertionError(f"the viewer exited ({self.proc.returncode})")
        size = self.last["sizes"].get(pid)
        return int(size[1]) if size else 0

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        self.reader.cancel()


async def test_aiortc_remb_viewer_layer_follows_a_throttled_link(
    link: Link, sfu: Sfu, tmp_path: Path
) -> None:
    """The same throttled link with an aiortc subscriber, which sends REMB and no TWCC:
    the SFU learns of the throttle only from its REMB and receiver reports, and climbs
    back by REMB probing (docs/sfu.md, "Subscribers without TWCC")."""
    playwright_api = pytest.importorskip("playwright.async_api")
    browsers: list[Any] = []
    viewer: Viewer | None = None
    async with playwright_api.async_playwright() as p:
        try:
            pub_browser, publisher = await open_page(p, wrapper(tmp_path, link.sfu))
            browsers.append(pub_browser)
            await publisher.evaluate("([u, t]) => run(u, t)", [sfu.control_url, token("pub")])
            pub_id = await until_async(
                lambda: publisher.evaluate("window.state.participant_id"),
                "publisher joined",
                30,
                every=0.25,
            )
            proc = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", link.sub, sys.executable, "-m", "tests.sfu.remb_viewer",
                sfu.control_url, token("viewer"), stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            viewer = Viewer(proc)

            async def full() -> bool:
                assert viewer is not None
                return await viewer.height(pub_id) == 480

            async def dropped() -> bool:
                assert viewer is not None
                return 0 < await viewer.height(pub_id) < 480

            began = time.monotonic()
            await until_async(full, "the viewer to receive the 480p layer", 90, every=0.25)
            ramp = time.monotonic() - began
            rates = await layer_rates(publisher)
            await until_async(full, "the viewer to be back on the 480p layer", 30, every=0.25)
            before = await sfu.stats()
            assert before["twcc_feedback"] == 0, before  # aiortc: REMB only
            limit, down, recovered, during, after = await throttle_cycle(
                link, sfu, rates, dropped, full, 60
            )
            kbit = {rid: round(rate / 1e3) for rid, rate in rates.items()}
            print(
                f"\nREMB viewer: layer rates {kbit} kbit/s; throttle {limit // 1000} kbit/s;"
                f" first 480p after {ramp:.1f} s; dropped after {down:.1f} s; back to 480p"
                f" {recovered:.1f} s after unthrottling; probe packets"
                f" {after['probe_packets'] - during['probe_packets']};"
                f" load {os.getloadavg()[0]:.1f}"
            )
        finally:
            if viewer is not None:
                await viewer.close()
            for browser in browsers:
                await browser.close()
