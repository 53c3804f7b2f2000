"""A group call through the SFU, from four pages of one Chromium (fake camera and
microphone, 360p so four encoders fit on two shared cores), against the real
`visavis serve`.

Ann calls Ben and Cat: everyone decodes everyone's video (frames counted per participant
from getStats, not just tracks present). Ann adds Dan mid-call; he declines, she rings him
again, he joins and the grid grows. The three others mute, so Ann is the only one
speaking: the SFU names her dominant and her tile grows on their grids. Dan's window
shrinks until one tile fits: his client tells the SFU (`layout`) and the SFU stops sending
him the video of the two off screen, while Ann's keeps coming; it resumes when the window
grows back. With Ann's tile large, the two small ones ask the SFU for the lowest simulcast
layer only (`thumbnails`): Dan decodes them at a smaller frame height than Ann's.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, expect

from tests.browser import chromium
from tests.served import Served
from tests.web.clients import Device, axe_violations, open_device, sign_in, signup_rest

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="package")]

PEOPLE = {
    "ann@example.com": "Ann",
    "ben@example.com": "Ben",
    "cat@example.com": "Cat",
    "dan@example.com": "Dan",
}
# Two cells fit in a window this small (js/core/grid.js:fitCells): one tile and "+N".
SMALL = {"width": 340, "height": 330}
NORMAL = {"width": 1000, "height": 700}


@pytest.fixture(scope="module")
def voice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A loud tone: the default fake microphone's rare beeps stay under the SFU's speech
    threshold, so nobody would ever be the dominant speaker."""
    sox = shutil.which("sox")
    if sox is None:
        pytest.fail("sox is missing: scripts/setup installs it")
    wav = tmp_path_factory.mktemp("audio") / "voice.wav"
    synth = ["synth", "120", "sine", "440", "vol", "0.9"]
    subprocess.run([sox, "-n", "-r", "48000", "-c", "1", "-b", "16", str(wav), *synth], check=True)
    return wav


@pytest_asyncio.fixture(scope="module", loop_scope="package")
async def talking_browser(voice: Path) -> AsyncIterator[Browser]:
    """One Chromium whose fake microphone talks: whoever is unmuted speaks."""
    async with chromium(f"--use-file-for-fake-audio-capture={voice}") as launched:
        yield launched


SPEAKERS = """window.visavis.controller.pc.getStats().then((r) => ({
  dominant: window.visavis.controller.dominant,
  levels: [...r.values()].filter((s) => s.type === "media-source" && s.kind === "audio")
    .map((s) => s.audioLevel),
  inbound: [...r.values()].filter((s) => s.type === "inbound-rtp" && s.kind === "audio")
    .map((s) => s.audioLevel)}))"""


async def received(device: Device) -> dict[str, Any]:
    """Per remote participant id: video frames decoded, audio samples (getStats)."""
    result: dict[str, Any] = await device.page.evaluate(
        "window.visavis.controller ? window.visavis.controller.received() : {}"
    )
    return result


async def wait_decoding(device: Device, others: int, frames: int = 5) -> dict[str, Any]:
    """Until ``device`` decodes video (and receives audio) from ``others`` participants,
    polled from here (a wait_for_function predicate returning a promise counts as true at
    once)."""
    deadline = time.monotonic() + 45
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        seen = await received(device)
        ok = [p for p in seen.values() if p["video"] >= frames and p["audio"] > 0]
        if len(ok) >= others:
            return seen
        await device.page.wait_for_timeout(300)
    state = await device.page.evaluate(
        "({slots: [...window.visavis.controller.slots.values()],"
        " participants: [...window.visavis.controller.participants.keys()],"
        " ice: window.visavis.controller.pc?.iceConnectionState})"
    )
    raise AssertionError(f"not decoding {others} others: {seen} {state}")


async def grid_shape(device: Device) -> tuple[int, int]:
    """The grid's columns and rows (what js/core/grid.js decided, as CSS variables)."""
    style = await device.page.locator(".grid").get_attribute("style") or ""
    found = dict(re.findall(r"--(cols|rows):\s*(\d+)", style))
    return int(found["cols"]), int(found["rows"])


async def video_of(device: Device, participant: str) -> int:
    return int((await received(device)).get(participant, {}).get("video", 0))


async def test_group_call_grid_dominant_speaker_layout_add_and_ring_again(
    server: Served, talking_browser: Browser
) -> None:
    for handle, name in PEOPLE.items():
        signup_rest(server.http_url, handle, name)
    handles = list(PEOPLE)
    devices = [await open_device(talking_browser, server.http_url, max_height=360) for _ in handles]
    ann, ben, cat, dan = devices
    try:
        for device, handle in zip(devices, handles, strict=True):
            await sign_in(device, handle, f"{PEOPLE[handle]}'s laptop")

        # -- Ann calls Ben and Cat: three people, everyone decodes everyone ------------
        await ann.page.get_by_label("Handles, separated by commas").fill(
            "ben@example.com, cat@example.com"
        )
        await ann.page.get_by_role("button", name="Call all").click()

        async def answer(device: Device) -> None:
            await expect(device.page.get_by_role("alertdialog")).to_be_visible()
            await device.page.get_by_role("button", name="Video", exact=True).click()

        await asyncio.gather(answer(ben), answer(cat))
        trio = [ann, ben, cat]
        for device in trio:
            await device.wait_phase("in_call", within=45)
        for device in trio:
            await wait_decoding(device, 2)
            await expect(device.page.locator(".tile")).to_have_count(2)
        assert await grid_shape(ann) == (2, 1)  # two tiles side by side

        # -- add Dan mid-call: he declines, Ann rings him again, he joins --------------
        await ann.page.get_by_role("button", name="Add person").click()
        await ann.page.get_by_label("Add someone to this call").fill("dan@example.com")
        await ann.page.get_by_role("button", name="Ring", exact=True).click()
        await expect(dan.page.get_by_role("alertdialog")).to_be_visible()
        await dan.page.get_by_role("button", name="Decline").click()
        ring_again = ann.page.get_by_role("button", name="Ring again")
        await expect(ring_again).to_be_visible()  # Dan is listed as not in the call
        await ring_again.click()
        await answer(dan)
        await dan.wait_phase("in_call", within=45)
        for device in devices:
            await wait_decoding(device, 3)
            await expect(device.page.locator(".tile")).to_have_count(3)
        # The grid adapted: three tiles take two rows (with a large tile, three columns).
        assert await grid_shape(ann) in ((2, 2), (3, 2))

        # -- the only one speaking is Ann: her tile grows on everyone else's grid ------
        for device in (ben, cat, dan):
            await device.page.locator('[data-action="mute"]').click()
        ann_id = await ann.page.evaluate("window.visavis.controller.participantId")
        for device in (ben, cat, dan):
            try:
                await expect(
                    device.page.locator(f'.tile.large[data-participant="{ann_id}"]')
                ).to_be_visible(timeout=30_000)
            except AssertionError:
                seen = await device.page.evaluate(SPEAKERS)
                mine = await ann.page.evaluate(SPEAKERS)
                raise AssertionError(f"{ann_id} never large: {seen}; Ann: {mine}") from None

        hidden = await dan.page.evaluate(
            "(ann) => window.visavis.controller.remotes().map((r) => r.participant_id)"
            ".filter((id) => id !== ann)",
            ann_id,
        )
        assert len(hidden) == 2, hidden

        # -- Dan's grid asks for layers by tile size: Ann's large tile the top one, the
        #    two small tiles the lowest (the SFU's `thumbnails`) -------------------------
        senders = {ann_id: ann}
        for device in (ben, cat):
            senders[await device.page.evaluate("window.visavis.controller.participantId")] = device
        await wait_layers(dan, senders, large=ann_id)
        # The grid in a call, as a screen reader or keyboard user meets it: axe-clean.
        assert await axe_violations(dan.page) == []

        # -- Dan's window shrinks: two tiles go off screen and the SFU stops them ------
        await dan.page.set_viewport_size(SMALL)  # type: ignore[arg-type]
        await expect(dan.page.locator(".tile.more")).to_contain_text("+2")
        await expect(dan.page.locator(f'.tile[data-participant="{ann_id}"]')).to_be_visible()
        # Ann's one tile is named (small now, so a thumbnail), the two others not at all.
        await dan.page.wait_for_function(
            "(ann) => { const l = window.visavis.controller.layout;"
            " return [...l.visible, ...l.thumbnails].join() === ann; }",
            arg=ann_id,
            timeout=10_000,
        )
        # Let frames already on their way drain, then watch while Ann's video goes on.
        start = await video_of(dan, ann_id)
        await wait_more_frames(dan, ann_id, start + 15)
        before = {p: await video_of(dan, p) for p in hidden}
        start = await video_of(dan, ann_id)
        await wait_more_frames(dan, ann_id, start + 45)
        after = {p: await video_of(dan, p) for p in hidden}
        for p in hidden:
            assert after[p] - before[p] <= 2, (p, before, after)  # paused by the SFU

        await dan.page.set_viewport_size(NORMAL)  # type: ignore[arg-type]
        await expect(dan.page.locator(".tile")).to_have_count(3)
        for p in hidden:  # resumed (from a keyframe the SFU asked for)
            await wait_more_frames(dan, p, after[p] + 10)

        # Three leave; the call ends for the last one, left alone.
        for device in (ann, ben, cat):
            await device.page.locator('[data-action="end"]').click()
        for device in devices:
            await device.wait_phase("idle")
            assert device.errors == [], device.errors
    finally:
        for device in devices:
            await device.close()


# The heights of the simulcast layers a page sends now (getStats; CPU adaptation may
# scale them all down on a loaded machine, so they are read, not assumed).
SENT_HEIGHTS = """window.visavis.controller.pc.getStats().then((r) => [...r.values()]
  .filter((s) => s.type === "outbound-rtp" && s.kind === "video" && s.frameHeight)
  .map((s) => s.frameHeight))"""

TILE_SIZES = """[...document.querySelectorAll(".grid > figure.tile")].map((el) => ({
  id: el.dataset.participant, large: el.classList.contains("large"),
  width: el.clientWidth, height: el.clientHeight}))"""


async def wait_layers(device: Device, senders: dict[str, Device], large: str) -> None:
    """Until ``device`` names ``large`` visible and the others thumbnails in its layout
    and decodes ``large`` at the top layer its sender sends and each other participant
    at their lowest (frameHeight from getStats on both ends)."""
    tiles = await device.page.evaluate(TILE_SIZES)
    for tile in tiles:  # the premise: the small tiles fit in a 1080p camera's ¼ layer
        assert tile["large"] or (tile["width"] <= 480 and tile["height"] <= 270), tiles
    small = sorted(pid for pid in senders if pid != large)
    deadline = time.monotonic() + 45
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        layout = await device.page.evaluate("window.visavis.controller.layout")
        got = await received(device)
        sent = {pid: await sender.page.evaluate(SENT_HEIGHTS) for pid, sender in senders.items()}
        seen = {"layout": layout, "decoded": got, "sent": sent}
        named = layout["visible"] == [large] and sorted(layout["thumbnails"]) == small
        top = got.get(large, {}).get("height") == max(sent[large], default=-1)
        low = all(got.get(p, {}).get("height") == min(sent[p], default=-1) for p in small)
        if named and top and low and all(len(set(sent[p])) > 1 for p in small):
            for p in small:
                assert got[p]["height"] < got[large]["height"], seen
            return
        await device.page.wait_for_timeout(300)
    raise AssertionError(f"layers by tile size not reached: {seen}")


async def wait_more_frames(device: Device, participant: str, at_least: int) -> None:
    """Until ``device`` has decoded ``at_least`` video frames of ``participant``."""
    deadline = time.monotonic() + 30
    frames = 0
    while time.monotonic() < deadline:
        frames = await video_of(device, participant)
        if frames >= at_least:
            return
        await device.page.wait_for_timeout(200)
    raise AssertionError(f"{participant}: {frames} frames decoded, wanted {at_least}")
