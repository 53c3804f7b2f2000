"""Web Push (RFC 8030 with VAPID, RFC 8292; payload encryption RFC 8291) for devices
that are not connected when a call rings them.

The push service (the browser vendor's, or any RFC 8030 endpoint) wakes the device; the
device then connects and receives the ring from its mailbox. The payload only says who
is calling, never anything secret. Sends run in a thread (pywebpush is synchronous) and
never delay ringing the connected devices.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from visavis.signaling.messages import CallIncoming, CallStopRinging
from visavis.signaling.metrics import SignalingMetrics
from visavis.store.base import Device

log = logging.getLogger(__name__)


def load_or_create_vapid_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The server's VAPID key pair (P-256), created once in the data directory."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return key


def vapid_public_key_b64(key: ec.EllipticCurvePrivateKey) -> str:
    """The applicationServerKey a browser passes to pushManager.subscribe()."""
    import base64

    raw = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class WebPusher:
    def __init__(
        self, key: ec.EllipticCurvePrivateKey, subject: str, metrics: SignalingMetrics
    ) -> None:
        from py_vapid import Vapid02

        self._vapid = Vapid02(private_key=key)
        self.subject = subject
        self.metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()

    async def ring(self, devices: Sequence[Device], ring: CallIncoming | CallStopRinging) -> None:
        """Start pushing to each device; return without waiting for the push services.

        A ring shows a notification (the web client's service worker); a stop withdraws
        it (cancelled, answered or declined elsewhere, timed out)."""
        if isinstance(ring, CallStopRinging):
            payload = json.dumps(
                {"type": "call.stop_ringing", "call_id": ring.call_id, "reason": ring.reason}
            )
        else:
            payload = json.dumps(
                {
                    "type": "call.incoming",
                    "call_id": ring.call_id,
                    "caller": ring.caller.model_dump(),
                    "media": ring.media,
                    "ring_deadline": ring.ring_deadline,
                }
            )
        for device in devices:
            if device.push_subscription:
                task = asyncio.create_task(self._send(device, payload))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _send(self, device: Device, payload: str) -> None:
        from pywebpush import WebPushException, webpush

        try:
            await asyncio.to_thread(
                webpush,
                subscription_info=device.push_subscription,
                data=payload,
                vapid_private_key=self._vapid,
                vapid_claims={"sub": self.subject},
                ttl=30,
                headers={"Urgency": "high"},
                timeout=5,
            )
            self.metrics.pushes.labels("sent").inc()
        except WebPushException as exc:
            self.metrics.pushes.labels("rejected").inc()
            log.warning("web push to device %s refused: %s", device.id, exc.message)
        except Exception as exc:  # network failure: the ring still waits in the mailbox
            self.metrics.pushes.labels("failed").inc()
            log.warning("web push to device %s failed: %s", device.id, type(exc).__name__)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
