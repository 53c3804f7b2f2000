"""Browsers in a group call on a fleet, and the call's SFU node killed under them.

Shared by ``tests/fleet/test_fleet_browsers.py`` (one kill, asserted) and
``benchmarks/fleet_failover_browser.py`` (repeated kills, p50/p99): real processes (2
signaling nodes, SFU nodes, PostgreSQL, Redis), Debian's Chromium through Playwright,
three pages of one browser signed in as three people, each on its own signaling node
where there are two. Each round SIGKILLs the node the room is on and measures, for every
page, the time until it is on the new node (``call.room_moved`` handled) and until it
decodes video from both others again there (frames counted by getStats on the new
connection, which starts at zero).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from playwright.async_api import Browser, expect

from tests.fleet.cluster import Fleet
from tests.served import SLOW_CLIENTS
from tests.web.clients import Device, open_device, sign_in, signup_rest

PEOPLE = {"ann@example.com": "Ann", "ben@example.com": "Ben", "cat@example.com": "Cat"}

STATE = """(() => { const c = window.visavis.controller;
  return c ? {url: c.room?.url, moves: c.moves ?? 0, id: c.participantId,
              phase: window.visavis.store.get().call.phase, rejoins: c.rejoins,
              generation: c.generation, reported: c.reported,
              ice: c.pc?.iceConnectionState ?? null} : null; })()"""


@dataclass
class Round:
    """One kill: seconds from the SIGKILL, per page, to being on the new node and to
    decoding both others there."""

    node: str
    moved: list[float] = field(default_factory=list)
    decoding: list[float] = field(default_factory=list)

    @property
    def recovery(self) -> float:
        return max(self.decoding)


async def received(device: Device) -> dict[str, Any]:
    """Per remote participant id: video frames decoded on the current connection."""
    result: dict[str, Any] = await device.page.evaluate(
        "window.visavis.controller ? window.visavis.controller.received() : {}"
    )
    return result


async def state(device: Device) -> dict[str, Any]:
    result: dict[str, Any] = await device.page.evaluate(STATE)
    return result


async def decoding_others(device: Device, frames: int) -> bool:
    seen = await received(device)
    return sum(1 for p in seen.values() if p["video"] >= frames) >= len(PEOPLE) - 1


@contextlib.asynccontextmanager
async def group_call(f: Fleet, browser: Browser) -> AsyncIterator[list[Device]]:
    """Ann calls Ben and Cat from three pages (360p cameras); yields once every page
    decodes both others."""
    for handle, name in PEOPLE.items():
        signup_rest(f.signaling[0].http_url, handle, name)
    devices: list[Device] = []
    try:
        for i, handle in enumerate(PEOPLE):
            node = f.signaling[i % len(f.signaling)]
            device = await open_device(browser, node.http_url, max_height=360)
            devices.append(device)
            await sign_in(device, handle, f"{PEOPLE[handle]}'s laptop")
        ann, ben, cat = devices
        await ann.page.get_by_label("Handles, separated by commas").fill(
            "ben@example.com, cat@example.com"
        )
        await ann.page.get_by_role("button", name="Call all").click()

        async def answer(device: Device) -> None:
            await expect(device.page.get_by_role("alertdialog")).to_be_visible()
            await device.page.get_by_role("button", name="Video", exact=True).click()

        await asyncio.gather(answer(ben), answer(cat))
        for device in devices:
            await device.wait_phase("in_call", within=45)
        await until_all(devices, lambda d: decoding_others(d, 5), 60, "decoding before")
        yield devices
    finally:
        for device in devices:
            await device.close()


async def until_all(
    devices: list[Device], check: Callable[[Device], Any], limit: float, what: str
) -> list[float]:
    """Poll every device until ``check(device)`` holds for each (bounded); return the
    monotonic time at which each first held."""
    start = time.monotonic()
    done: dict[int, float] = {}
    while len(done) < len(devices):
        for i, device in enumerate(devices):
            if i not in done and await check(device):
                done[i] = time.monotonic()
        if time.monotonic() - start > limit:
            seen = [await state(d) for d in devices]
            frames = [await received(d) for d in devices]
            raise AssertionError(f"{what}: not reached in {limit} s: {seen} {frames}")
        await asyncio.sleep(0.05)  # polling the pages' own state and getStats
    return [done[i] for i in range(len(devices))]


# Started in each page just before a kill: notes (wall clock, ms) when the page has moved
# and when it first decodes ``frames`` frames from each of ``others`` participants on the
# new connection. Measured in the page, so the test's polling of three pages on a busy
# machine does not add to the figures.
WATCH = """([moves, frames, others]) => {
  const seen = (window.failover = {moved: null, connected: null, first: null, decoding: null});
  const tick = async () => {
    const c = window.visavis.controller;
    if (c && (c.moves ?? 0) >= moves) {
      seen.moved ??= Date.now();
      const ice = c.pc?.iceConnectionState;
      if (ice === "connected" || ice === "completed") seen.connected ??= Date.now();
      const got = await c.received();
      if (Object.values(got).some((p) => p.video > 0)) seen.first ??= Date.now();
      if (Object.values(got).filter((p) => p.video >= frames).length >= others) {
        seen.decoding = Date.now();
        return;
      }
    }
    setTimeout(tick, 20);
  };
  tick();
}"""


async def kill_room_node(
    f: Fleet, devices: list[Device], moves: int, how: signal.Signals = signal.SIGKILL
) -> Round:
    """Send ``how`` to the node the call's room is on (SIGKILL: it dies, its sockets
    close; SIGSTOP: it hangs with its sockets open); wait until every page moved
    (``moves`` moves so far) and decodes both others on the new node."""
    urls = {(await state(d))["url"] for d in devices}
    assert len(urls) == 1, urls
    node = f.node_of(urls.pop())
    for device in devices:
        await device.page.evaluate(WATCH, [moves, 3, len(PEOPLE) - 1])
    killed = time.time() * 1000
    f.sfu[node].process.send_signal(how)

    async def recovered(d: Device) -> bool:
        return bool(await d.page.evaluate("window.failover.decoding !== null"))

    await until_all(devices, recovered, 30, "decoding after the move")
    seen = [await d.page.evaluate("window.failover") for d in devices]
    for d in devices:
        s = await state(d)
        assert s["moves"] == moves and s["url"] != f.sfu[node].sfu_url, s
    print("per page, s after the kill (moved, ICE connected, first frame, decoding both):",
          [[round((s[k] - killed) / 1000, 2) if s[k] else None
            for k in ("moved", "connected", "first", "decoding")] for s in seen])
    return Round(
        node,
        [(s["moved"] - killed) / 1000 for s in seen],
        [(s["decoding"] - killed) / 1000 for s in seen],
    )


async def reports_acted(f: Fleet) -> float:
    """``visavis_fleet_media_lost_reports_total{outcome="acted"}`` over signaling nodes."""
    total = 0.0
    async with httpx.AsyncClient(timeout=10) as http:
        for node in f.signaling:
            text = (await http.get(f"{node.http_url}/metrics")).text
            total += sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith('visavis_fleet_media_lost_reports_total{outcome="acted"}')
            )
    return total


def node_env(sfu: int) -> dict[str, dict[str, str]]:
    """Extra settings for ``sfu`` SFU nodes named as ``tests.fleet.cluster`` names them."""
    return {f"sfu-{chr(97 + i)}": dict(SLOW_CLIENTS) for i in range(sfu)}
