"""Reactions with a guest of a call link, in Chromium against ``visavis serve``: Lia makes a
link, Gus (no account, no device socket) opens it and is admitted. A guest sends its
reactions with ``POST /api/guest/reaction`` and finds everyone else's in its mailbox (the
``GET /api/guest/e2ee`` poll that already brings its key messages), sealed like everyone's
with the call's end-to-end keys (``app.e2ee``): Lia's reaction plays on Lia's tile on
Gus's screen and Gus's on Gus's tile on Lia's; every reaction payload that crosses
signaling (WebSocket frames, the guest's requests and its mailbox) or the SFU's control
socket is ciphertext; the rate limit holds for a guest (the client's own, and the server's
against a client that ignores it); a guest cannot send to another call.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import expect

from tests.effects import harness
from tests.effects.test_client_effects import KINDS, watch_signaling
from tests.effects.test_group_effects import played
from tests.served import Served
from tests.signaling.harness import Device as SocketDevice
from tests.waiting import until_async
from tests.web.clients import PASSWORD, Device, open_device, sign_in, signup_rest

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

LIA = "lia.fx@example.com"

# A guest's page floods the server, bypassing its own client's limit: every request at once.
FLOOD = """async ([callId, n]) => {
  const app = window.visavis;
  const payload = await app.e2ee.seal(new TextEncoder().encode("not a reaction"));
  let text = "";
  for (const b of payload) text += String.fromCharCode(b);
  const body = JSON.stringify({ call_id: callId,
    payload: btoa(text).replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "") });
  const answers = await Promise.all(Array.from({ length: n }, () => fetch("/api/guest/reaction", {
    method: "POST", body,
    headers: { "content-type": "application/json", authorization: `Bearer ${app.guestApi.token}` },
  })));
  const code = async (r) => (r.status === 204 ? "" : (await r.json()).code);
  return Promise.all(answers.map(async (r) => [r.status, await code(r)]));
}"""

# The client's own limit, from the guest's page: n reactions as fast as it can.
BURST = """async ([kind, n]) => {
  const fx = window.visavis.effects;
  const t0 = performance.now();
  const sent = [];
  for (let i = 0; i < n; i++) sent.push(await fx.react(kind));
  return { sent: sent.filter(Boolean).length, ms: performance.now() - t0 };
}"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await harness.launch(playwright)
        try:
            yield chromium
        finally:
            await chromium.close()


def watch_guest_requests(device: Device, sink: list[str], posted: list[str]) -> None:
    """Record what the guest's page sends to and reads from /api/guest/* (its signaling):
    request bodies and answers in ``sink``, the reactions' request URLs in ``posted``."""

    async def on_response(response: Any) -> None:
        if "/api/guest" not in response.url:
            return
        if response.request.post_data:
            sink.append(response.request.post_data)
        if response.url.endswith("/api/guest/reaction"):
            posted.append(response.url)
        if response.status == 200:
            with contextlib.suppress(Exception):  # the page went away meanwhile
                sink.append(await response.text())

    device.page.on("response", on_response)


def reaction_payloads(texts: list[str]) -> list[bytes]:
    """Every reaction payload in the recorded traffic (a device's ``call.reaction``, a
    guest's POST body ``{call_id, payload}``, a mailbox's events), decoded."""
    out = []
    for text in texts:
        try:
            message = json.loads(text)
        except ValueError:
            continue
        if not isinstance(message, dict):
            continue
        events = message.get("events")
        for item in events if isinstance(events, list) else [message]:
            guest_post = set(item) == {"call_id", "payload"}
            if item.get("type") == "call.reaction" or guest_post:
                payload = item["payload"]
                out.append(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return out


async def socket_device(http_url: str, handle: str) -> SocketDevice:
    """A signed-in device on the signaling WebSocket (no browser): someone in another call."""
    signup_rest(http_url, handle, handle.split("@")[0])
    body = {"handle": handle, "password": PASSWORD, "device_name": "sdk"}
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(f"{http_url}/api/login", json=body)
    assert r.status_code == 200, r.text
    login = r.json()
    device = SocketDevice(http_url, login["token"], login["device"]["id"], handle)
    assert (await device.connect())["type"] == "welcome"
    return device


async def test_guest_and_member_see_each_others_reactions_sealed_and_limited(
    server: Served, browser: Any
) -> None:
    signup_rest(server.http_url, LIA, "Lia")
    lia = await open_device(browser, server.http_url, max_height=360)
    devices = [lia]
    sockets: list[SocketDevice] = []
    frames: list[str] = []  # every WebSocket frame (signaling, SFU) and guest request
    watch_signaling(lia, frames)
    try:
        lia.page.set_default_timeout(60_000)  # a shared, loaded machine
        await sign_in(lia, LIA, "Lia's laptop")
        await lia.page.get_by_role("button", name="Make a call link").click()
        url = await lia.page.get_by_role("textbox", name="Call link").input_value()
        gus = await open_device(
            browser, server.http_url, max_height=360, path=url.removeprefix(server.http_url)
        )
        devices.append(gus)
        gus.page.set_default_timeout(60_000)
        watch_signaling(gus, frames)
        posted: list[str] = []
        watch_guest_requests(gus, frames, posted)
        await gus.page.get_by_label("Your name").fill("Gus")
        await gus.page.get_by_role("button", name="Ask to join").click()
        notice = lia.page.locator(".lobby-notice")
        await notice.get_by_role("button", name="Open the call").click()
        await lia.wait_phase("in_call", within=60)
        await lia.page.get_by_role("button", name="Admit Gus").click()
        await gus.wait_phase("in_call", within=60)

        # Once each holds the other's keys (their SFrame media decrypts), both can react.
        t0 = time.monotonic()
        for device in (lia, gus):

            async def keyed(d: Device = device) -> bool:
                got = await d.page.evaluate("window.visavis.e2ee.stats()")
                return bool(got) and got["frames"]["decrypted"] >= 10

            await until_async(keyed, "keys agreed with the guest, frames decrypted", 90)
            await device.page.wait_for_function("() => window.visavis.effects.canReact")
        print(f"keys agreed and reactions ready {time.monotonic() - t0:.1f} s after admission")
        lia_id, gus_id = [
            await d.page.evaluate("window.visavis.controller.participantId") for d in (lia, gus)
        ]
        assert gus_id.startswith("guest:Gus/"), gus_id

        # Lia (Alt+1) → Gus sees it on Lia's tile; Gus (the menu) → Lia sees it on his.
        await lia.page.keyboard.press("Alt+Digit1")
        [hearts] = await played(gus, "hearts")
        assert hearts["who"] == lia_id and hearts["on"].startswith("tile"), hearts
        controls = gus.page.get_by_role("navigation", name="Call controls")
        await controls.get_by_role("button", name="React").click()
        await gus.page.get_by_role("menuitem", name="Fireworks").click()
        [fireworks] = await played(lia, "fireworks")
        assert fireworks["who"] == gus_id and fireworks["on"].startswith("tile"), fireworks
        assert (await played(gus, "fireworks"))[0]["who"] == "self"
        for device in (lia, gus):
            stats = await device.page.evaluate("window.visavis.effects.reactions.stats")
            assert stats["received"] >= 1 and sum(stats["dropped"].values()) == 0, stats

        # Not to another call: Ann and Bo, in a call of their own, never hear of it.
        ann = await socket_device(server.http_url, "ann.guestfx@example.com")
        bo = await socket_device(server.http_url, "bo.guestfx@example.com")
        sockets += [ann, bo]
        call_id = await gus.page.evaluate("window.visavis.state.call.callId")
        other = (await ann.ok("call.invite", handles=["bo.guestfx@example.com"]))["call_id"]
        await bo.expect("call.incoming")
        await bo.ok("call.answer", call_id=other)
        refused = await gus.page.evaluate(FLOOD, [other, 1])
        assert refused == [[403, "not_in_call"]], refused
        await asyncio.sleep(0.5)  # time for a stray relay to arrive: there must be none
        assert not [e for d in sockets for e in d.drain() if e["type"] == "call.reaction"]

        # The client's own limit holds on a guest's page (3 at once, then one per 1.5 s) ...
        burst = await gus.page.evaluate(BURST, ["thumbs_down", 8])
        assert 1 <= burst["sent"] <= 3 + burst["ms"] / 1500, burst
        limited = await gus.page.evaluate("window.visavis.effects.reactions.stats.limited")
        assert limited >= 8 - burst["sent"], limited

        async def lia_got_them() -> bool:
            got = await lia.page.evaluate("window.visavis.effects.played")
            return sum(p["kind"] == "thumbs_down" for p in got) == burst["sent"]

        await until_async(lia_got_them, "Lia sees each thumbs down Gus's limit let out", 30)
        # ... and the server's, against a guest's page that ignores it (5 at once, then
        # one per 0.75 s): refused with 429 reaction_rate_limited.
        answers = await gus.page.evaluate(FLOOD, [call_id, 10])
        assert [204, ""] in answers and [429, "reaction_rate_limited"] in answers, answers
        assert {tuple(a) for a in answers} <= {(204, ""), (429, "reaction_rate_limited")}

        # On the wire: every reaction payload signaling or the SFU carried is ciphertext.
        mailbox = [f for f in frames if '"call.reaction"' in f and '"events"' in f]
        assert posted and mailbox, "Gus sent and read reactions over /api/guest"
        assert [f for f in frames if '"call.reaction"' in f and f not in mailbox]  # Lia's socket
        payloads = reaction_payloads(frames)
        assert len(payloads) >= 4, len(payloads)
        for payload in payloads:
            assert not any(kind.encode() in payload for kind in KINDS), payload
            with pytest.raises(ValueError):  # not the plain message (UTF-8 JSON)
                json.loads(payload)
        for frame in frames:  # a kind in clear is a JSON string: '"hearts"' (or '\"hearts')
            clear = [kind for kind in KINDS if f'"{kind}' in frame]
            assert not clear, f"{clear} in clear: {frame[:200]}"

        await lia.page.locator('[data-action="end"]').click()
        await expect(gus.page.get_by_role("heading", name="The call has ended")).to_be_visible()
        for device in devices:
            assert device.errors == [], device.errors
    finally:
        for socket in sockets:
            await socket.close()
        for device in devices:
            await device.close()
