"""Ringing with no page open: signaling pushes a ring to a sleeping device and, when the
caller cancels, pushes the withdrawal that closes the notification (the service worker's
side is tested in the browser below, with pushes delivered through DevTools, since
Chromium's own push service is unreachable here)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import http_ece
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from playwright.async_api import Browser

from tests.served import Served
from tests.signaling.harness import cluster
from tests.signaling.test_web_push import PushService, _b64
from tests.web.clients import open_device


async def test_cancel_pushes_the_withdrawal_to_a_sleeping_device(tmp_path: Path) -> None:
    push = PushService()
    await push.start()
    try:
        async with cluster(tmp_path) as c:
            (alice,) = await c.user("alice@example.com")
            await c.signup("bob@example.com")
            asleep = await c.login("bob@example.com", "phone", connect=False)
            key = ec.generate_private_key(ec.SECP256R1())
            secret = os.urandom(16)
            public = key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
            subscription = {
                "endpoint": f"{push.url}/push/bob-phone",
                "keys": {"p256dh": _b64(public), "auth": _b64(secret)},
            }
            r = await c.http.put(
                f"{c.url}/api/devices/current/push",
                json=subscription,
                headers={"Authorization": f"Bearer {asleep.token}"},
            )
            assert r.status_code == 204

            async def next_payload() -> dict[str, str]:
                _, body = await asyncio.wait_for(push.received.get(), 10)
                plain = http_ece.decrypt(
                    body, private_key=key, auth_secret=secret, version="aes128gcm"
                )
                payload: dict[str, str] = json.loads(plain)
                return payload

            call_id = (await alice.ok("call.invite", handles=["bob@example.com"]))["call_id"]
            assert (await next_payload())["type"] == "call.incoming"
            await alice.ok("call.cancel", call_id=call_id)
            stop = await next_payload()
            assert stop == {"type": "call.stop_ringing", "call_id": call_id, "reason": "cancelled"}
    finally:
        await push.close()


@pytest.mark.browser
@pytest.mark.asyncio(loop_scope="package")
async def test_service_worker_shows_and_withdraws_the_ring(
    server: Served, browser: Browser
) -> None:
    device = await open_device(browser, server.http_url)
    await device.context.grant_permissions(["notifications"])
    try:
        page = device.page
        await page.wait_for_function(
            "() => navigator.serviceWorker.controller !== null", timeout=20_000
        )
        registration = await page.evaluate("navigator.serviceWorker.ready.then((r) => r.scope)")
        assert registration == server.http_url + "/"
        # Push through DevTools, as a push service would deliver it to the worker.
        cdp = await device.context.new_cdp_session(page)
        versions: list[dict[str, str]] = []
        cdp.on("ServiceWorker.workerVersionUpdated", lambda e: versions.extend(e["versions"]))
        await cdp.send("ServiceWorker.enable")
        await page.wait_for_timeout(200)
        reg_id = next(v["registrationId"] for v in versions)
        ring = {
            "type": "call.incoming",
            "call_id": "c-42",
            "caller": {"handle": "alice@example.com", "display_name": "Alice"},
            "media": "video",
            "ring_deadline": 0,
        }
        await cdp.send(
            "ServiceWorker.deliverPushMessage",
            {"origin": server.http_url, "registrationId": reg_id, "data": json.dumps(ring)},
        )
        shown = (
            "navigator.serviceWorker.ready.then((r) => r.getNotifications())"
            ".then((ns) => ns.map((n) => [n.title, n.tag]))"
        )

        async def notifications(count: int) -> list[list[str]]:
            for _ in range(100):  # bounded: 100 x 100 ms
                found: list[list[str]] = await page.evaluate(shown)
                if len(found) == count:
                    return found
                await page.wait_for_timeout(100)
            raise AssertionError(f"expected {count} notifications, saw {found}")

        assert await notifications(1) == [["Alice is calling", "call:c-42"]]
        stop = {"type": "call.stop_ringing", "call_id": "c-42", "reason": "cancelled"}
        await cdp.send(
            "ServiceWorker.deliverPushMessage",
            {"origin": server.http_url, "registrationId": reg_id, "data": json.dumps(stop)},
        )
        assert await notifications(0) == []
    finally:
        await device.close()
