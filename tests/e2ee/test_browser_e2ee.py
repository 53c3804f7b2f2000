"""The web client's end-to-end encryption in Debian's Chromium, against one node wired
as `visavis serve` wires it (signaling + relay + SFU in this process, so that the test
can tap the SFU and modify signaling):

- a browser and a Python SDK bot in one group call through the SFU, keys agreed over
  `call.e2ee` by the browser's own key schedule (web/e2ee/keys.js) and the SDK's
  (GroupE2ee): each decodes the other, and they show the same verification code;
- a tap on everything the SFU forwards: no chunk of what the browser encoded (as the
  bot decrypts it) passes through the SFU in clear, while its ciphertext does;
- a signaling server modified to swap the DTLS fingerprint in a 1:1 call's SDP: both
  browsers stop the call with a security warning before any media flows;
- a browser and an SDK device in a 1:1 call check each other's signed fingerprints; a
  device key that changed since the last call (as signaling hands it out) is caught
  before the next call connects.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, expect

from tests.browser import chromium
from tests.e2ee.test_group_sdk import PASSWORD, Bot, bots, node_settings
from tests.e2ee.test_sfu_tap import chunks
from tests.waiting import until, until_async
from tests.web.clients import Device, open_device, sign_in
from visavis.client.e2ee import enable_e2ee
from visavis.client.media import MediaSource
from visavis.e2ee.frames import Codec, clear_length
from visavis.e2ee.identity import DeviceIdentity, b64
from visavis.node import Node
from visavis.sfu.room import Participant
from visavis.sfu.transport import WebRtcTransport
from visavis.signaling import messages as m
from visavis.signaling.calls import CallService

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="function")]

STATS = "window.visavis.e2ee.stats()"
SENT_HEIGHTS = """(async () => {
  const pc = window.visavis.controller?.pc;
  const out = [];
  if (pc) (await pc.getStats()).forEach((r) => {
    if (r.type === "outbound-rtp" && r.kind === "video" && r.frameHeight) out.push(r.frameHeight);
  });
  return out;
})()"""
VIDEO_PACKETS = """(async () => {
  const pc = window.visavis.controller?.pc;
  if (!pc) return 0;
  let n = 0;
  (await pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") n += r.packetsReceived ?? 0;
  });
  return n;
})()"""


@pytest_asyncio.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    """Role all with the relay and the SFU on the test's loop: these tests tap the SFU's
    send path and read its rooms (the served tests are in test_served_e2ee.py)."""
    node = Node(node_settings(tmp_path), media_in_process=True)
    await node.start()
    yield node
    await node.close()


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


def url(node: Node) -> str:
    assert node.signaling is not None
    return str(node.signaling.url)


async def signup(node: Node, handle: str) -> None:
    """An account over REST (async: the server runs on this test's loop)."""
    body = {"handle": handle, "password": PASSWORD, "display_name": handle[:3].title()}
    async with httpx.AsyncClient() as http:
        assert (await http.post(f"{url(node)}/api/signup", json=body)).status_code == 201


async def browser_user(browser: Browser, node: Node, handle: str) -> Device:
    await signup(node, handle)
    device = await open_device(browser, url(node), max_height=360)
    await sign_in(device, handle, "laptop")
    return device


async def received(device: Device) -> dict[str, Any]:
    got: dict[str, Any] = await device.page.evaluate(
        "window.visavis.controller ? window.visavis.controller.received() : {}"
    )
    return got


async def test_browser_and_bot_in_an_encrypted_group_call(
    node: Node, browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forwarded: list[bytes] = []
    send = WebRtcTransport.send_rtp

    def tap(self: WebRtcTransport, plain: bytes) -> Any:
        offset = 12 + 4 * (plain[0] & 0x0F)
        if plain[0] & 0x10:
            offset += 4 + 4 * int.from_bytes(plain[offset + 2 : offset + 4], "big")
        forwarded.append(plain[offset:])
        return send(self, plain)

    monkeypatch.setattr(WebRtcTransport, "native_send", False)  # forwarded RTP via send_rtp
    monkeypatch.setattr(WebRtcTransport, "send_rtp", tap)

    (bot,) = await bots(node, tmp_path, ["bot"])
    await signup(node, "ghost@example.com")  # rung, never answers: a group
    ann = await browser_user(browser, node, "ann@example.com")

    # The bot's sender key reaches the browser late: only once the browser has received
    # the bot's video and dropped it as undecryptable (its first keyframe included). In a
    # real call signaling can be slower than media the same way, and the tile must not
    # stay black: Chromium's receiver asks for a keyframe (RTCP PLI, which the SFU passes
    # on to the bot) every few hundred ms while packets arrive but nothing decodes.
    relay = CallService.e2ee
    held: list[asyncio.Task[None]] = []

    async def video_dropped() -> bool:
        packets = await ann.page.evaluate(VIDEO_PACKETS)
        stats = await ann.page.evaluate(STATS)
        dropped = stats["frames"]["dropped"].get("unknown_kid", 0) if stats else 0
        return bool(packets > 0 and dropped >= 30)

    async def deliver_late(self: CallService, user: Any, device: Any, msg: m.CallE2ee) -> None:
        await until_async(video_dropped, "the browser drops the bot's video (no key yet)", 60)
        await relay(self, user, device, msg)

    async def late_key(self: CallService, user: Any, device: Any, msg: m.CallE2ee) -> None:
        if device.id == bot.session.device_id and json.loads(msg.payload)["kind"] == "key":
            held.append(asyncio.create_task(deliver_late(self, user, device, msg)))
            return
        await relay(self, user, device, msg)

    monkeypatch.setattr(CallService, "e2ee", late_key)
    asked: list[str] = []  # keyframe requests (PLI/FIR) the SFU got, by subscriber
    on_keyframe_request = Participant._on_keyframe_request

    def count(self: Participant, ssrc: int, now: float) -> None:
        asked.append(self.user)
        on_keyframe_request(self, ssrc, now)

    monkeypatch.setattr(Participant, "_on_keyframe_request", count)
    try:
        call_id = (
            await bot.session.request(
                "call.invite", handles=["ann@example.com", "ghost@example.com"]
            )
        ).call_id
        assert call_id is not None
        await expect(ann.page.get_by_role("heading", name="Bot")).to_be_visible()
        await ann.page.get_by_role("button", name="Video", exact=True).click()
        await bot.enter(call_id, 0, loud=True)
        assert bot.sfu is not None and bot.e2ee is not None

        # What the bot decrypts from the browser: the browser's encoded frames.
        plaintext: list[bytes] = []
        decrypt = bot.e2ee.keyring.decrypt

        def spy(codec: Codec, data: bytes) -> bytes | None:
            frame = decrypt(codec, data)
            if frame is not None:
                plaintext.append(frame[clear_length(codec, frame) :])
            return frame

        monkeypatch.setattr(bot.e2ee.keyring, "decrypt", spy)

        await ann.wait_phase("in_call", within=40)
        ann_pid = await ann.page.evaluate("window.visavis.controller.participantId")
        await bot.sfu.wait_for(
            lambda: (
                bot.sfu is not None
                and bot.sfu.frames[ann_pid]["video"] >= 10
                and bot.sfu.frames[ann_pid]["audio"] >= 10
            ),
            60,
        )
        bot_pid = bot.sfu.participant_id

        async def ann_decodes_bot() -> bool:
            got = await received(ann)
            return bool(got.get(bot_pid, {}).get("video", 0) >= 10)

        try:
            await until_async(ann_decodes_bot, "the browser decodes the bot's video", 60)
        except AssertionError as exc:  # say which link of the chain broke
            raise AssertionError(f"{exc}: {await diagnose(ann, bot, node, held, asked)}") from None
        assert held and all(t.done() for t in held)  # the key was late
        assert "ann@example.com" in asked  # and the browser asked for a keyframe
        stats = await ann.page.evaluate(STATS)
        assert stats["frames"]["encrypted"] > 20 and stats["frames"]["decrypted"] > 20
        assert stats["alerts"] == [] and stats["refused"] == {}
        # One verification code, the same in the browser's call view and in the SDK.
        code = bot.e2ee.verification_code
        assert re.fullmatch(r"\d{5}( \d{5}){3}", code)
        await expect(ann.page.locator(f'[data-code="{code}"]')).to_be_visible()

        # The tap: the browser's ciphertext crosses the SFU, its plaintext never does.
        sealed = b"".join(forwarded)
        secret = chunks(plaintext)
        assert len(plaintext) > 20 and len(secret) > 20
        assert [c for c in secret if c in sealed] == []
        await ann.page.get_by_role("button", name="End").click()
        await ann.wait_phase("idle")
        assert ann.errors == []
        assert await ann.page.evaluate("window.visavis.e2ee.session") is None  # erased
    finally:
        for task in held:
            task.cancel()
        await ann.close()
        await bot.close()


async def diagnose(
    device: Device, bot: Bot, node: Node, held: list[asyncio.Task[None]], asked: list[str]
) -> dict[str, Any]:
    """What the browser, the bot and the SFU know, for a failure message."""
    assert bot.sfu is not None and bot.e2ee is not None and node.sfu is not None
    consumers = {
        p.user: {
            mid: f"{c.producer.participant.user} {c.producer.kind} "
            f"layer {c.selector.current} -> {c.selector.target}"
            for mid, c in p.consumers.items()
        }
        for room in node.sfu.rooms.values()
        for p in room.participants.values()
    }
    return {
        "browser_e2ee": await device.page.evaluate(STATS),
        "browser_received": await received(device),
        "browser_video_packets": await device.page.evaluate(VIDEO_PACKETS),
        "bot_keys": {"kid": bot.e2ee.keyring.current.kid, "peers": list(bot.e2ee.keys.peers)},
        "bot_refused": dict(bot.e2ee.keys.refused),
        "key_held": [t.done() for t in held],
        "keyframe_requests": {u: asked.count(u) for u in set(asked)},
        "sfu_consumers": consumers,
    }


async def test_swapped_dtls_fingerprint_stops_a_one_to_one_call(
    node: Node, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    relay = CallService.signal

    async def swap(self: CallService, user: Any, device: Any, msg: m.CallSignal) -> None:
        if msg.description is not None:  # the server puts its own certificate in the SDP
            sdp = re.sub(
                r"a=fingerprint:sha-256 \S+",
                "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
                msg.description.sdp,
            )
            msg = msg.model_copy(
                update={"description": msg.description.model_copy(update={"sdp": sdp})}
            )
        await relay(self, user, device, msg)

    monkeypatch.setattr(CallService, "signal", swap)
    ann = await browser_user(browser, node, "ann@example.com")
    ben = await browser_user(browser, node, "ben@example.com")
    try:
        await ann.find_and_call("ben@example.com")
        await expect(ben.page.get_by_role("heading", name="Ann")).to_be_visible()
        await ben.page.get_by_role("button", name="Video", exact=True).click()
        # Ben's check of Ann's offer fails: the call stops, and both are told why (Ann by
        # Ben's signed alert, which can reach her just as her side of the call ends).
        for device in (ann, ben):
            warning = device.page.get_by_role("alert").filter(has_text="Security warning")
            await expect(warning).to_be_visible(timeout=30_000)
            assert "stopped" in (await warning.text_content() or "")
            await device.wait_phase("idle", within=30)
            assert "connected" not in await device.page.evaluate("window.visavis.phases")
            assert "in_call" not in await device.page.evaluate("window.visavis.phases")
    finally:
        await ann.close()
        await ben.close()


async def test_browser_and_sdk_one_to_one_then_a_changed_device_key_is_caught(
    node: Node, browser: Browser, tmp_path: Path
) -> None:
    """A browser and an SDK device (enable_e2ee) in a 1:1 call check each other's signed
    DTLS fingerprints and show one code; the browser pins the SDK device's key. Then
    signaling hands out another key for that device (a substituted identity): the next
    call stops before it connects, with the warning and a way to trust the new key."""
    (bot,) = await bots(node, tmp_path, ["bot"])
    await enable_e2ee(bot.session, bot.identity, bot.pins)
    ann = await browser_user(browser, node, "ann@example.com")
    try:
        call = await bot.session.call("ann@example.com", MediaSource.test_pattern())
        await expect(ann.page.get_by_role("heading", name="Bot")).to_be_visible()
        await ann.page.get_by_role("button", name="Video", exact=True).click()
        await call.wait_connected(40)
        await ann.wait_phase("in_call", within=40)
        await call.wait_frames(5, 30)
        assert call.e2ee is not None and call.e2ee.keys.alerts == []
        code = call.e2ee.verification_code
        await expect(ann.page.locator(f'[data-code="{code}"]')).to_be_visible()
        await call.hangup()
        await ann.wait_phase("idle", within=30)

        # The server now hands out a key that is not the one ann pinned for this device.
        assert node.signaling is not None and node.signaling.ctx is not None
        store = node.signaling.ctx.store
        real = store.get_device_keys

        async def substituted(device_ids: Any) -> dict[str, str]:
            keys = await real(device_ids)
            if bot.session.device_id in keys:
                keys[bot.session.device_id] = b64(DeviceIdentity.generate().public)
            return keys

        store.get_device_keys = substituted  # type: ignore[method-assign]
        again = await bot.session.call("ann@example.com", MediaSource.test_pattern())
        await expect(ann.page.get_by_role("heading", name="Bot")).to_be_visible()
        await ann.page.get_by_role("button", name="Video", exact=True).click()
        warning = ann.page.get_by_role("alert").filter(has_text="device key changed")
        await expect(warning).to_be_visible(timeout=30_000)
        await expect(ann.page.get_by_role("button", name="trust the new key")).to_be_visible()
        assert await again.wait_ended(30) != "hangup"
        assert again.connected_at is None
        phases = await ann.page.evaluate("window.visavis.phases")
        assert phases.count("in_call") == 1  # the first call only
    finally:
        await ann.close()
        await bot.close()


async def test_browser_simulcast_layers_switch_encrypted_as_a_subscriber_layout_changes(
    node: Node, browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The browser publishes three SFrame-encrypted simulcast layers (at 640x360 Chromium
    sends two of them, q and h); the bot, subscribed, changes its layout: a large
    tile (the highest layer sent), a thumbnail (the lowest), not shown (nothing
    forwarded), shown again (resumes on a keyframe). The SFU switches on the encrypted
    keyframes (it reads only the clear VP8 tag) and the bot keeps decrypting and decoding,
    at the resolution of the layer the layout asks for."""
    (bot,) = await bots(node, tmp_path, ["bot"])
    await signup(node, "ghost@example.com")  # rung, never answers: a group
    ann = await browser_user(browser, node, "ann@example.com")
    try:
        call_id = (
            await bot.session.request(
                "call.invite", handles=["ann@example.com", "ghost@example.com"]
            )
        ).call_id
        assert call_id is not None
        await expect(ann.page.get_by_role("heading", name="Bot")).to_be_visible()
        await ann.page.get_by_role("button", name="Video", exact=True).click()
        await bot.enter(call_id, 0)
        sfu = bot.sfu
        assert sfu is not None and bot.e2ee is not None
        await ann.wait_phase("in_call", within=40)
        ann_pid = await ann.page.evaluate("window.visavis.controller.participantId")
        await sfu.wait_for(lambda: sfu.frames[ann_pid]["video"] >= 10, 60)

        assert node.sfu is not None
        room = next(iter(node.sfu.rooms.values()))
        video = next(p for p in room.participants[ann_pid].producers.values() if p.is_video)
        assert [layer.rid for layer in video.layers] == ["q", "h", "f"]
        viewer = room.participants[sfu.participant_id]
        consumer = next(c for c in viewer.consumers.values() if c.producer is video)
        # The layout, not the bandwidth, is under test: aiortc's REMB drops on a delay
        # spike (a loaded machine) and then grows only to 1.5x what it receives, which
        # would keep the thumbnail's low layer after the tile grows again.
        monkeypatch.setattr(viewer.bwe, "estimate", lambda now: 20_000_000.0)

        async def sent_heights() -> list[int]:
            heights = await ann.page.evaluate(SENT_HEIGHTS)
            return sorted(set(heights))

        async def shows(visible: list[str], thumbnails: list[str], layer: str) -> None:
            """After this layout, at least 10 more frames decode, the last one at the
            height of the highest (or lowest) layer the browser sends now (Chromium may
            scale its layers down under CPU load: compare with what it sends)."""
            await sfu.set_layout(visible, thumbnails)
            start = sfu.frames[ann_pid]["video"]

            async def decoded() -> bool:
                heights = await sent_heights()
                want = heights[-1] if layer == "highest" else heights[0]
                return (
                    len(heights) >= 2
                    and sfu.frames[ann_pid]["video"] >= start + 10
                    and sfu.video_size.get(ann_pid, (0, 0))[1] == want
                )

            await until_async(decoded, f"the bot decodes the {layer} layer", 60)

        await shows([ann_pid], [], "highest")  # large tile
        await shows([], [ann_pid], "lowest")  # thumbnail
        # Not shown: the SFU pauses the stream; the frame count stops growing.
        await sfu.set_layout([], [])
        await until(lambda: consumer.selector.target == -1, "the SFU paused the tile", 30)
        await until_async(stalled(lambda: sfu.frames[ann_pid]["video"], 1.0), "no more frames", 30)
        await shows([ann_pid], [], "highest")  # shown again: resumes on a keyframe
        stats = bot.e2ee.keyring.stats
        assert stats.decrypted > 50 and not stats.dropped.get("auth")
        assert room.stats.keyframe_requests > 0
    finally:
        await ann.close()
        await bot.close()


def stalled(count: Any, quiet: float) -> Any:
    """A condition: ``count()`` did not change for ``quiet`` seconds."""
    last: list[Any] = [None, 0.0]

    async def check() -> bool:
        now = asyncio.get_running_loop().time()
        value = count()
        if value != last[0]:
            last[0], last[1] = value, now
            return False
        return now - last[1] >= quiet

    return check
