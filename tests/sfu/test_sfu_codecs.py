"""VP9, H.264 and AV1 rooms: three Chromium pages, end-to-end encrypted, through the SFU.

Each page is a group-call participant built from the web client's own modules (the
room's codec applied with ``web/js/call/codecs.js``, every frame through the E2EE
worker of ``web/e2ee/``): it publishes a two-layer simulcast camera and a microphone and
decodes everyone else. The room's codec comes from the join token (``codec`` claim).
Asserted: every page decodes every other page's video in the room's codec (getStats
``framesDecoded`` grows, the inbound codec's mimeType), audio arrives, frames were
encrypted and decrypted with no authentication failure, and the SFU switches one
subscriber between the simulcast layers on keyframes it finds in encrypted packets.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest

from tests.browser import chromium
from tests.sfu.conftest import SECRET
from tests.sfu.test_sfu_chromium import page_server
from tests.waiting import until_async
from visavis.client.sfu_session import PatternTrack, SfuSession, SfuSessionError, ToneTrack
from visavis.e2ee.ratchet import Keyring
from visavis.sfu.room import Participant
from visavis.sfu.server import SfuServer
from visavis.tokens import sign_token

MIME = {"vp9": "video/VP9", "h264": "video/H264", "av1": "video/AV1"}
# Chromium caps simulcast layers by resolution; lift the cap so 640x360 sends two.
ARGS = ["--force-fieldtrials=WebRTC-LegacySimulcastLayerLimit/Disabled/"]


def codec_token(user: str, codec: str, room: str) -> str:
    claims = {"room": room, "call": "call-1", "user": user, "device": "d1", "codec": codec}
    return sign_token(SECRET, claims, now=time.time(), ttl=120)


async def sender_codecs(page: Any) -> list[str]:
    return list(
        await page.evaluate(
            "RTCRtpSender.getCapabilities('video').codecs.map((c) => c.mimeType + ' ' +"
            " (c.sdpFmtpLine || ''))"
        )
    )


async def start_pages(
    browser: Any, url: str, sfu: SfuServer, codec: str, n: int, layers: int = 2
) -> list[Any]:
    key = list(secrets.token_bytes(16))
    kids = list(range(1, n + 1))
    pages = []
    for kid in kids:
        page = await browser.new_page()
        await page.goto(url)
        await page.wait_for_function("typeof window.run === 'function'")
        await page.evaluate(
            "([u, t, kid, kids, key, layers]) =>"
            " run(u, t, {e2ee: {kid, kids, key}, roomCodec: true, layers})",
            [
                sfu.control_url,
                codec_token(f"user{kid}", codec, f"room-{codec}-{layers}"),
                kid,
                kids,
                key,
                layers,
            ],
        )
        pages.append(page)
    for page in pages:  # joined: the tests read each page's participant id next
        await page.wait_for_function("window.state.participant_id", timeout=60_000)
    return pages


@pytest.mark.browser
@pytest.mark.parametrize("codec", ["vp9", "av1", "h264"])
async def test_codec_room_with_e2ee_decodes_on_every_side(sfu: SfuServer, codec: str) -> None:
    pytest.importorskip("playwright.async_api")
    async with chromium(*ARGS) as browser:
        with page_server() as url:
            probe = await browser.new_page()
            await probe.goto(url)
            if codec == "h264" and not any("42e01f" in c for c in await sender_codecs(probe)):
                pytest.skip("this Chromium build has no H.264 encoder (docs/sfu.md, Codecs)")
            pages = await start_pages(browser, url, sfu, codec, 3)
            ids = [await p.evaluate("window.state.participant_id") for p in pages]
            room = sfu.rooms[f"room-{codec}-2"]
            assert room.video_codec.name.lower() == codec

            async def everyone_decodes() -> bool:
                for page, me in zip(pages, ids, strict=True):
                    errors = await page.evaluate("window.state.errors")
                    assert not errors, errors
                    got = await page.evaluate("received()")
                    for other in ids:
                        if other == me:
                            continue
                        entry = got.get(other, {})
                        if entry.get("video", 0) < 20 or entry.get("audio", 0) == 0:
                            return False
                        assert entry["mime"] == MIME[codec], entry
                return True

            try:
                await until_async(
                    everyone_decodes, f"every page to decode the others ({codec})", 90
                )
            except AssertionError as exc:
                seen = [await page.evaluate("received()") for page in pages]
                sfu_side = {
                    pid: {
                        "estimate": p.bwe.estimate(time.monotonic()),
                        "consumers": [
                            (c.producer.participant.id, c.producer.kind, c.selector.target,
                             c.selector.current, c.packets)
                            for c in p.consumers.values()
                        ],
                    }
                    for pid, p in room.participants.items()
                }  # fmt: skip
                raise AssertionError(f"{exc}: pages {seen}; SFU {sfu_side}") from exc
            for page in pages:
                stats = await page.evaluate("e2eeStats()")
                assert stats["encrypted"] > 0 and stats["decrypted"] > 0, stats
                assert not stats["dropped"].get("auth"), stats

            # The SFU switches a subscriber's layer on keyframes found in encrypted packets.
            publisher = room.participants[ids[0]]
            video = next(p for p in publisher.producers.values() if p.is_video)
            assert [layer.rid for layer in video.layers] == ["q", "h"]
            subscriber = room.participants[ids[1]]
            assert isinstance(subscriber, Participant)
            consumer = next(c for c in subscriber.consumers.values() if c.producer is video)

            # The test sets the budget itself: Chromium negotiated TWCC, so the SFU's own
            # delay-based estimate would override it; switch that estimator off.
            subscriber.gcc = None

            async def on_layer(layer: int, budget: float) -> bool:
                subscriber.bwe.on_delay_based(budget, time.monotonic())
                return bool(consumer.selector.current == layer)

            async def decoded() -> int:
                got = await pages[1].evaluate("received()")
                return int(got.get(ids[0], {}).get("video", 0))

            for layer, budget in ((0, 100_000.0), (1, 20_000_000.0)):

                async def switched(layer: int = layer, budget: float = budget) -> bool:
                    return await on_layer(layer, budget)

                await until_async(switched, f"a switch to layer {layer} ({codec})", 40)
                frames = await decoded()

                async def more(frames: int = frames) -> bool:
                    return await decoded() >= frames + 10

                await until_async(more, f"decoding after the switch to layer {layer}", 30)


@pytest.mark.interop
async def test_sdk_h264_room_with_e2ee(sfu: SfuServer) -> None:
    """Two Python SDK participants (aiortc encodes H.264) in an H.264 room with SFrame:
    the unit layout survives aiortc's packetizer and the SFU, and each decodes the other."""
    keyrings = [Keyring(), Keyring()]
    keyrings[0].install("b", keyrings[1].current)
    keyrings[1].install("a", keyrings[0].current)
    clients = [
        SfuSession(
            sfu.control_url,
            codec_token(name, "h264", "room-sdk"),
            audio=ToneTrack(0.3),
            video=PatternTrack(seed=i),
            keyring=keyrings[i],
        )
        for i, name in enumerate(["a", "b"])
    ]
    try:
        for client in clients:
            await client.join()
            assert client.video_codec == "h264"
        for me, other in ((clients[0], clients[1]), (clients[1], clients[0])):
            frames = me.frames[other.participant_id or ""]

            def decoded(frames: dict[str, int] = frames) -> bool:
                return frames["video"] >= 10

            await me.wait_for(decoded, 60)
        room = sfu.rooms["room-sdk"]
        for participant in room.participants.values():
            for producer in participant.producers.values():
                if producer.is_video:
                    assert producer.layers[0].codec == 2  # keyframes by H.264 NAL types
        for keyring in keyrings:
            assert keyring.stats.encrypted > 0 and keyring.stats.decrypted > 0
            assert not keyring.stats.dropped.get("auth"), keyring.stats.dropped
    finally:
        for client in clients:
            await client.close()


@pytest.mark.interop
async def test_sdk_cannot_join_an_av1_room_and_is_told_why(sfu: SfuServer) -> None:
    client = SfuSession(
        sfu.control_url, codec_token("a", "av1", "room-av1-sdk"), video=PatternTrack(seed=1)
    )
    try:
        with pytest.raises(SfuSessionError) as caught:
            await client.join()
        assert caught.value.code == "unsupported_codec"
        assert "this room's video codec is AV1" in str(caught.value)
    finally:
        await client.close()


@pytest.mark.browser
@pytest.mark.parametrize("codec", ["vp9", "av1"])
async def test_svc_thumbnail_gets_the_lowest_spatial_layer(sfu: SfuServer, codec: str) -> None:
    """Chromium sends one VP9 or AV1 stream with spatial layers (asked for L3T3_KEY;
    Chromium 156 reports L2T3_KEY for this 640x360 camera), encrypted; a subscriber that
    shows it as a thumbnail gets only the lowest spatial and temporal layer (decoded
    smaller, frames advancing), then all of them again when it shows it large (decoded
    at full size). VP9's layers are read from its payload descriptor, AV1's from the
    dependency descriptor, which the SFU forwards unchanged (docs/sfu.md, Codecs)."""
    pytest.importorskip("playwright.async_api")
    async with chromium(*ARGS) as browser:
        with page_server() as url:
            pages = await start_pages(browser, url, sfu, codec, 2, layers=0)
            ids = [await p.evaluate("window.state.participant_id") for p in pages]
            room = sfu.rooms[f"room-{codec}-0"]
            publisher = room.participants[ids[0]]
            video = next(p for p in publisher.producers.values() if p.is_video)
            assert video.svc and len(video.layers) == 1

            async def width() -> int:
                errors = await pages[1].evaluate("window.state.errors")
                assert not errors, errors
                got = await pages[1].evaluate("received()")
                entry = got.get(ids[0], {})
                assert entry.get("mime") in (None, MIME[codec]), entry
                return int(entry.get("width", 0)) if entry.get("video", 0) >= 10 else 0

            async def decoded() -> int:
                got = await pages[1].evaluate("received()")
                return int(got.get(ids[0], {}).get("video", 0))

            async def full() -> bool:
                return await width() >= 640

            await until_async(full, "the subscriber to decode every layer (640 wide)", 60)
            await pages[1].evaluate("([id]) => layout([], [id])", [ids[0]])

            async def thumbnail() -> bool:
                # the last decoded frame's width: the lowest layer is a half or a quarter
                # (Chromium drops the lowest of three layers below 240x135)
                return 0 < await width() <= 320

            await until_async(thumbnail, "only the lowest spatial layer (<= 320 wide)", 40)
            subscriber = room.participants[ids[1]]
            consumer = next(c for c in subscriber.consumers.values() if c.producer is video)
            assert (consumer.spatial, consumer.spatial_target) == (0, 0)
            assert (consumer.temporal, consumer.temporal_target) == (0, 0)

            async def advancing(what: str) -> None:
                frames = await decoded()

                async def more() -> bool:
                    return await decoded() >= frames + 5

                await until_async(more, what, 30)

            await advancing("thumbnail frames decoded")
            await pages[1].evaluate("([id]) => layout([id], [])", [ids[0]])

            async def large_again() -> bool:
                return bool(consumer.spatial == 7) and await width() >= 640

            await until_async(large_again, "all spatial layers again, from a keyframe", 40)
            await advancing("frames decoded at full size again")
            stats = await pages[1].evaluate("e2eeStats()")
            assert stats["decrypted"] > 0 and not stats["dropped"].get("auth"), stats
