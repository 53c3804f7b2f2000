"""Simulcast across a cascade link, with the real processes: 2 signaling nodes (regions eu
and us), 2 SFU nodes (one per region), PostgreSQL, Redis. Ann's browser (Debian
Chromium, the web client, a 720p camera: three simulcast layers) calls from eu, so she
publishes on the eu node; Bob and Cat (Python SDK) answer from us and join the us node.
Bob, on the us node, gets Ann's video across the link, and the us node picks her layer
for him from his layout, as for a local publisher: shown as a thumbnail he gets her
lowest layer (320 pixels wide), shown large a higher one; decoding throughout.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aioice.ice
import pytest
from playwright.async_api import expect

from tests.fleet.browsers import chromium
from tests.fleet.cluster import fleet
from tests.fleet.test_fleet_processes import Watcher, login
from tests.services import fresh_postgres, fresh_redis_prefix
from tests.web.clients import open_device, sign_in, signup_rest
from visavis.client.sfu_session import PatternTrack, SfuSession, ToneTrack
from visavis.signaling import messages as m

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser]

LOWEST = 320  # Ann's 1280x720 camera scaled down by 4: the "q" layer


async def until(predicate: object, limit: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"not within {limit} s: {what}"
        await asyncio.sleep(0.05)  # polling the SDK session's frame counters


async def test_simulcast_layers_chosen_across_the_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda *a, **k: ["127.0.0.1"])
    env = {
        "sfu-a": {"VISAVIS_FLEET__REGION": "eu", "VISAVIS_SFU__DEAD_TIMEOUT": "30"},
        "sfu-b": {"VISAVIS_FLEET__REGION": "us", "VISAVIS_SFU__DEAD_TIMEOUT": "30"},
        "sig-0": {"VISAVIS_FLEET__REGION": "eu"},
        "sig-1": {"VISAVIS_FLEET__REGION": "us"},
    }
    async with fresh_postgres() as db, fresh_redis_prefix() as prefix:
        with fleet(tmp_path, db, prefix, sfu=2, node_env=env) as f:
            eu, us = f.signaling
            signup_rest(eu.http_url, "ann@example.com", "Ann")
            us_only = type(f)(f.env, [us], f.sfu)  # both SDK people come through us
            async with (
                login(us_only, ["bob@example.com", "cat@example.com"]) as (bob_s, cat_s),
                chromium() as browser,
            ):
                watchers = [Watcher(bob_s), Watcher(cat_s)]
                ann = await open_device(browser, eu.http_url, max_height=720)
                media: list[SfuSession] = []
                try:
                    await sign_in(ann, "ann@example.com", "Ann's laptop")
                    await ann.page.get_by_label("Handles, separated by commas").fill(
                        "bob@example.com, cat@example.com"
                    )
                    await ann.page.get_by_role("button", name="Call all").click()
                    rings = []  # the call's id comes with the ring
                    for w in watchers:
                        deadline = time.monotonic() + 30
                        while not w.of(m.CallIncoming):
                            assert time.monotonic() < deadline, "never rang"
                            await asyncio.sleep(0.05)  # polling the watcher's events
                        rings.append(w.of(m.CallIncoming)[0])
                    call_id = rings[0].call_id  # type: ignore[attr-defined]
                    for s in (bob_s, cat_s):
                        await s.request("call.answer", call_id=call_id)
                    joins = [await w.next_room(call_id) for w in watchers]
                    assert [f.node_of(j.url) for j in joins] == ["sfu-b", "sfu-b"]
                    for i, j in enumerate(joins):
                        session = SfuSession(
                            j.url, j.token, audio=ToneTrack(0.0), video=PatternTrack(seed=i)
                        )
                        media.append(session)
                        await session.join(20)
                    await ann.wait_phase("in_call", within=45)
                    url = await ann.page.evaluate("window.visavis.controller.room.url")
                    assert f.node_of(url) == "sfu-a"  # Ann publishes on the eu node
                    ann_id = await ann.page.evaluate("window.visavis.controller.participantId")
                    bob = media[0]
                    await until(lambda: bob.frames[ann_id]["video"] >= 10, 45,
                                "Bob (us) decoding Ann (eu) across the link")

                    async def width_after(layout: dict[str, list[str]], ok: object) -> int:
                        assert callable(ok)
                        await bob.set_layout(**layout)
                        seen = bob.frames[ann_id]["video"]

                        def settled() -> bool:
                            width = bob.video_width.get(ann_id, 0)
                            return bool(ok(width)) and bob.frames[ann_id]["video"] >= seen + 10

                        await until(settled, 30, f"Ann's layer for {layout}")
                        return bob.video_width[ann_id]

                    small = await width_after(
                        {"visible": [], "thumbnails": [ann_id]}, lambda w: 0 < w <= LOWEST
                    )
                    large = await width_after(
                        {"visible": [ann_id], "thumbnails": []}, lambda w: w > LOWEST
                    )
                    print(f"Ann's video on the us node: thumbnail {small} px, large {large} px")
                    await expect(ann.page.get_by_role("alertdialog")).to_have_count(0)
                    assert not ann.errors, ann.errors
                finally:
                    for session in media:
                        await session.close()
                    for w in watchers:
                        w.stop()
                    await ann.close()
