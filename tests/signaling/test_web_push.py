"""Devices that are not connected are woken by Web Push (RFC 8030/8291/8292).

The push service here is a real HTTP endpoint on loopback playing the browser vendor's
part: it receives what any push service would, and the test decrypts it with the
subscription's private key, as the browser would.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path
from typing import Any

import http_ece
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tests.signaling.harness import cluster
from tests.waiting import until_async


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PushService:
    """Accepts pushes on /push/<id> and keeps them for the test."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[dict[str, str], bytes]] = asyncio.Queue()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/push/{sub}", self._push)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def _push(self, request: web.Request) -> web.Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        await self.received.put((headers, await request.read()))
        return web.Response(status=201)

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def _verify_vapid(header: str, public_key_b64: str, audience: str) -> dict[str, Any]:
    """Check the VAPID JWT (ES256) against the server's advertised key."""
    scheme, _, params = header.partition(" ")
    assert scheme == "vapid", header
    fields = dict(p.strip().split("=", 1) for p in params.split(","))
    assert fields["k"] == public_key_b64
    head, body, sig = fields["t"].split(".")
    raw = _unb64(sig)
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _unb64(public_key_b64))
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key.verify(der, f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    claims: dict[str, Any] = json.loads(_unb64(body))
    assert claims["aud"] == audience
    return claims


async def test_a_disconnected_device_is_woken_by_web_push(tmp_path: Path) -> None:
    push = PushService()
    await push.start()
    try:
        async with cluster(tmp_path) as c:
            (alice,) = await c.user("alice@example.com")
            await c.signup("bob@example.com")
            bob_awake = await c.login("bob@example.com", "laptop")
            bob_asleep = await c.login("bob@example.com", "phone", connect=False)

            receiver_key = ec.generate_private_key(ec.SECP256R1())
            auth_secret = os.urandom(16)
            subscription = {
                "endpoint": f"{push.url}/push/bob-phone",
                "keys": {
                    "p256dh": _b64(
                        receiver_key.public_key().public_bytes(
                            serialization.Encoding.X962,
                            serialization.PublicFormat.UncompressedPoint,
                        )
                    ),
                    "auth": _b64(auth_secret),
                },
            }
            r = await c.http.put(
                f"{c.url}/api/devices/current/push",
                json=subscription,
                headers={"Authorization": f"Bearer {bob_asleep.token}"},
            )
            assert r.status_code == 204
            server_key = (await c.http.get(f"{c.url}/api/push/key")).json()["public_key"]

            call_id = (await alice.ok("call.invite", handles=["bob@example.com"]))["call_id"]
            await bob_awake.expect("call.incoming")  # connected: rung over its WebSocket
            headers, body = await asyncio.wait_for(push.received.get(), 10)
            assert headers["content-encoding"] == "aes128gcm"
            assert headers["urgency"] == "high" and int(headers["ttl"]) == 30
            _verify_vapid(headers["authorization"], server_key, push.url)
            plain = http_ece.decrypt(
                body, private_key=receiver_key, auth_secret=auth_secret, version="aes128gcm"
            )
            payload = json.loads(plain)
            assert payload["type"] == "call.incoming" and payload["call_id"] == call_id
            assert payload["caller"]["handle"] == "alice@example.com"

            # Woken, the phone connects and finds the ring waiting.
            await bob_asleep.connect()
            assert (await bob_asleep.expect("call.incoming"))["call_id"] == call_id

            # The sender counts the push once the push service has answered.
            async def counted() -> bool:
                metrics = (await c.http.get(f"{c.url}/metrics")).text
                return 'visavis_web_push_total{outcome="sent"} 1.0' in metrics

            await until_async(counted, "the push counted as sent", within=10)
            assert push.received.empty()  # one push in all, its sender done
    finally:
        await push.close()
