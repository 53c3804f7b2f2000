"""Simulcast across a link between two real SFU processes: 2 signaling nodes (regions eu and
us), 2 SFU nodes (one per region) on PostgreSQL and Redis. Debian's Chromium (a bare SFU
page: three simulcast layers, no end-to-end encryption) publishes on the eu node and is
already sending when a Python SDK subscriber joins the us leg, so each layer starts
crossing the link mid-stream. The subscriber decodes Chromium across the link, and
Chromium decodes it; the subscriber's ``layout`` chooses the layer on the us node (its
tile shown large: a high layer; then as a thumbnail: the lowest) and it keeps decoding
through the switch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aioice.ice
import pytest

from tests.browser import chromium
from tests.fleet.cluster import fleet
from tests.fleet.test_fleet_processes import Watcher, login
from tests.served import SLOW_CLIENTS
from tests.services import fresh_postgres, fresh_redis_prefix
from tests.sfu.test_sfu_chromium import page_server
from tests.waiting import until_async
from visavis.client.sfu_session import PatternTrack, SfuSession, ToneTrack
from visavis.signaling import messages as m

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser]

REGIONS = {
    "sfu-a": {"VISAVIS_FLEET__REGION": "eu", **SLOW_CLIENTS},
    "sfu-b": {"VISAVIS_FLEET__REGION": "us", **SLOW_CLIENTS},
    "sig-0": {"VISAVIS_FLEET__REGION": "eu"},
    "sig-1": {"VISAVIS_FLEET__REGION": "us"},
}
CHROMIUM_FLAGS = (
    "--allow-loopback-in-peer-connection",
    # Chromium caps simulcast layers by resolution (two at 640x480); lift the cap.
    "--force-fieldtrials=WebRTC-LegacySimulcastLayerLimit/Disabled/",
)


async def test_simulcast_crosses_a_link_between_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda *a, **k: ["127.0.0.1"])
    async with fresh_postgres() as db, fresh_redis_prefix() as prefix:
        with fleet(tmp_path, db, prefix, sfu=2, node_env=REGIONS) as f:
            handles = ["ann@example.com", "bob@example.com", "cat@example.com"]
            # login() alternates signaling nodes: ann and cat on eu, bob on us.
            async with login(f, handles) as (ann, bob, _cat), chromium(*CHROMIUM_FLAGS) as browser:
                watchers = [Watcher(ann), Watcher(bob)]
                subscriber: SfuSession | None = None
                try:
                    # A group call (cat is rung and never answers): ann's room is on eu.
                    call_id = (await ann.request("call.invite", handles=handles[1:])).call_id
                    assert call_id is not None
                    room = await watchers[0].next_room(call_id)
                    assert f.node_of(room.url) == "sfu-a"
                    with page_server() as page_url:
                        page = await browser.new_page()
                        await page.goto(page_url)
                        await page.evaluate("([u, t]) => run(u, t)", [room.url, room.token])
                        ann_id = await until_async(
                            lambda: page.evaluate("window.state.participant_id"),
                            "ann joins",
                            30,
                            every=0.25,
                        )

                        # Chromium is sending (at least two layers) before bob joins.
                        async def sending() -> bool:
                            sent: dict[str, int] = await page.evaluate("sentLayers()")
                            return sum(1 for n in sent.values() if n >= 30) >= 2

                        await until_async(
                            sending, "Chromium to send two simulcast layers", 45, every=0.25
                        )

                        await watchers[1].first(m.CallIncoming, call_id)
                        await bob.request("call.answer", call_id=call_id)
                        leg = await watchers[1].next_room(call_id)
                        assert f.node_of(leg.url) == "sfu-b"  # bob's region's leg
                        subscriber = SfuSession(
                            leg.url, leg.token, audio=ToneTrack(0.3), video=PatternTrack()
                        )
                        joined = time.monotonic()
                        await subscriber.join(20)
                        s = subscriber
                        await s.wait_for(lambda: s.frames[ann_id]["video"] >= 10, 30)
                        print(
                            f"bob decodes ann across the link {time.monotonic() - joined:.2f} s"
                            " after joining"
                        )

                        async def chromium_decodes_bob() -> bool:
                            got: dict[str, Any] = await page.evaluate("received()")
                            return bool(got.get(s.participant_id or "", {}).get("video", 0) >= 10)

                        await until_async(
                            chromium_decodes_bob, "Chromium to decode bob", 30, every=0.25
                        )

                        async def shown(
                            visible: list[str], thumbnails: list[str] | None, fits: Any
                        ) -> int:
                            """Apply a layout; wait until bob decodes ann's tile at a width
                            that ``fits``, and keeps decoding; return that width."""
                            await s.set_layout(visible, thumbnails)
                            started = time.monotonic()
                            await s.wait_for(lambda: fits(s.video_size[ann_id][0]), 30)
                            frames = s.frames[ann_id]["video"]
                            await s.wait_for(lambda: s.frames[ann_id]["video"] >= frames + 10, 15)
                            width = s.video_size[ann_id][0]
                            print(
                                f"layout {visible}/{thumbnails}: {width} px wide after"
                                f" {time.monotonic() - started:.2f} s"
                            )
                            return width

                        # Shown large, then as a thumbnail: the lowest layer is a quarter
                        # of the top one's width (half of the middle one's). (Large again
                        # is not asserted: docs/fleet.md, "Not done".)
                        high = await shown([ann_id], None, lambda w: w >= 320)
                        await shown([], [ann_id], lambda w: 2 * w <= high)
                        assert not await page.evaluate("window.state.errors")
                finally:
                    if subscriber is not None:
                        await subscriber.close()
                    for w in watchers:
                        w.stop()
