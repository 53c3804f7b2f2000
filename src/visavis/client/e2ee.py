"""End-to-end encryption for a group call of a :class:`~visavis.client.session.Session`.

    identity = DeviceIdentity.load_or_create(Path("~/.visavis/identity.pem").expanduser())
    await publish_identity(session, identity)
    e2ee = GroupE2ee(session, call_id, identity, Pins(path))
    await e2ee.start()
    sfu = SfuSession(room.url, room.token, audio=..., video=..., keyring=e2ee.keyring)

The class is the I/O shell of :class:`visavis.e2ee.keys.CallKeys`: it sends that state
machine's messages as ``call.e2ee`` requests, feeds it the ``call.e2ee`` events of the
call, tells it who left (``call.participant``, and ``call.guest`` for guests), and looks
up the identity key of each device that speaks, pinning it on first use. A changed pin
or a bad signature is an alert: ``on_alert`` is called, the device leaves the call, and
``stopped`` is set.

Guests from call links (``guest:<name>``, docs/e2ee.md "Guests") have no account, so
nobody can look their key up: a guest's identity key is the one its announce carries
(``ik``), unverified, never pinned; such devices are listed in ``guests``. A guest hears
only key messages addressed to it, which is what this device sends in answer to its
announce (which the guest repeats for members that join later).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
from aiortc import RTCCertificate, RTCPeerConnection

from visavis.e2ee.identity import DeviceIdentity, Pins, PinStatus, unb64, verification_code
from visavis.e2ee.keys import Alert, CallKeys, Outgoing
from visavis.e2ee.ratchet import Keyring
from visavis.signaling import messages as m

if TYPE_CHECKING:
    from visavis.client.call import Call
    from visavis.client.session import Session

log = logging.getLogger("visavis.client.e2ee")
GUEST_PREFIX = "guest:"  # how signaling names a call link's guest (no handle has a ":")
ANNOUNCE_WAIT = 15.0  # seconds a 1:1 description waits for the peer's signed announce


async def enable_e2ee(session: Session, identity: DeviceIdentity, pins: Pins | None = None) -> None:
    """Publish ``identity`` and use it in this session's 1:1 calls (signed fingerprints)."""
    await publish_identity(session, identity)
    session.identity = identity
    session.pins = pins or Pins()


async def publish_identity(session: Session, identity: DeviceIdentity) -> None:
    """Give signaling this device's identity public key (never the private half)."""
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.put(
            f"{session.url}/api/devices/current/identity",
            json={"public_key": identity.public_b64},
            headers={"Authorization": f"Bearer {session.token}"},
        )
        r.raise_for_status()


async def device_keys(session: Session, handle: str) -> dict[str, bytes]:
    """A contact's device ids and identity public keys, as signaling hands them out."""
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(
            f"{session.url}/api/users/{handle}/devices",
            headers={"Authorization": f"Bearer {session.token}"},
        )
        r.raise_for_status()
        return {d["device_id"]: unb64(d["public_key"]) for d in r.json()}


def announced_identity(payload: str) -> bytes | None:
    """The identity public key an announce carries (``ik``), or None: the only key a
    guest has (unverified; its announce's signature is then checked against it)."""
    try:
        message = json.loads(payload)
        if not isinstance(message, dict) or message.get("kind") != "announce":
            return None
        public = unb64(str(message["ik"]))
    except (ValueError, KeyError, TypeError):
        return None
    return public if len(public) == 32 else None


class CallKeysShell:
    """What the SDK's two group shells of :class:`CallKeys` share (a device's
    :class:`GroupE2ee`, a call link guest's :class:`~visavis.client.guest.GuestE2ee`): the
    identity keys of the call's devices, guests by name, the verification code, key
    messages sent in order, and alerts. Subclasses say how a sender's identity key is
    learnt (:meth:`_learn`), how a message goes out (:meth:`_deliver`) and how this device
    leaves on an alert (:meth:`_leave`)."""

    def __init__(
        self,
        call_id: str,
        device_id: str,
        identity: DeviceIdentity,
        on_alert: Callable[[Alert], None] | None = None,
    ) -> None:
        self.call_id = call_id
        self.device_id = device_id
        self.identity = identity
        self.on_alert = on_alert
        self.directory: dict[str, bytes] = {device_id: identity.public}
        self.handles: dict[str, str] = {}
        self.guests: dict[str, str] = {}  # device -> name of guests (unverified identity)
        self.keys = CallKeys(call_id, device_id, identity, self.directory.get)
        self._sending: asyncio.Lock = asyncio.Lock()
        self.stopped = False

    @property
    def keyring(self) -> Keyring:
        return self.keys.keyring

    @property
    def alerts(self) -> list[Alert]:
        return self.keys.alerts

    @property
    def verification_code(self) -> str:
        """Read aloud and compare: equal on every device unless a key was substituted."""
        members = {d: k for d, k in self.directory.items() if d in self.keys.peers}
        members[self.device_id] = self.identity.public
        return verification_code(self.call_id, members)

    def _learn_announced(self, event: m.CallE2eeEvent) -> bool:
        """Take a sender's identity key from its announce (``ik``): unverified."""
        public = announced_identity(event.payload)
        if public is None:  # the first message of such a sender must be its announce
            self.keys.refused["unknown_device"] += 1
            return False
        self.directory[event.from_device] = public
        self.handles[event.from_device] = event.from_user
        if event.from_user.startswith(GUEST_PREFIX):
            self.guests[event.from_device] = event.from_user.removeprefix(GUEST_PREFIX)
        return True

    async def _learn(self, event: m.CallE2eeEvent) -> bool:
        """Put the identity key of the (new) sender of ``event`` in the directory."""
        raise NotImplementedError

    async def _on_message(self, event: m.CallE2eeEvent) -> None:
        device = event.from_device
        if device not in self.directory and not await self._learn(event):
            return
        out = self.keys.peer_joined(device) if device not in self.keys.members else []
        await self._send(out + self.keys.receive(device, event.payload))

    async def _forget(self, device: str) -> None:
        """``device`` left the call: a fresh key for the rest."""
        self.handles.pop(device, None)
        self.guests.pop(device, None)
        if self.directory.pop(device, None) is not None:
            await self._send(self.keys.peer_left(device))

    async def _send(self, outgoing: list[Outgoing]) -> None:
        async with self._sending:  # key messages leave in the order they were made
            for message in outgoing:
                with contextlib.suppress(Exception):  # a dropped message is a refused one
                    await self._deliver(message)

    async def _deliver(self, message: Outgoing) -> None:
        raise NotImplementedError

    async def _leave(self) -> None:
        raise NotImplementedError

    async def _check_alerts(self) -> None:
        if not self.keys.alerts or self.stopped:
            return
        self.stopped = True
        own = [a for a in self.keys.alerts if a.reason != "peer_alert"]
        if own and own[0].device in self.keys.members:  # it learns why this device leaves
            await self._send([self.keys.alert_message(own[0])])
        for alert in self.keys.alerts:
            log.warning("end-to-end encryption alert in %s: %s", self.call_id, alert)
            if self.on_alert is not None:
                self.on_alert(alert)
        with contextlib.suppress(Exception):
            await self._leave()


class GroupE2ee(CallKeysShell):
    """This device's end-to-end keys for one group call, kept in step over signaling."""

    def __init__(
        self,
        session: Session,
        call_id: str,
        identity: DeviceIdentity,
        pins: Pins | None = None,
        *,
        on_alert: Callable[[Alert], None] | None = None,
    ) -> None:
        super().__init__(call_id, session.device_id, identity, on_alert)
        self.session = session
        self.pins = pins or Pins()
        self._events = session.events()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen for the call's key messages and announce this device's call key."""
        self._task = asyncio.create_task(self._run(), name=f"e2ee-{self.call_id}")
        await self._send(self.keys.start())

    async def close(self) -> None:
        """End of call: stop listening and erase the keys."""
        self._events.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.keys.end()

    async def _run(self) -> None:
        async for event in self._events:
            if getattr(event, "call_id", None) != self.call_id or self.stopped:
                continue
            try:
                if isinstance(event, m.CallE2eeEvent):
                    await self._on_message(event)
                elif isinstance(event, m.CallParticipant) and event.state in ("left", "handoff"):
                    await self._on_left(event)
                elif isinstance(event, m.CallGuest) and event.state == "left":
                    await self._forget(event.guest.id)
            except Exception:  # one bad event never ends the call's encryption
                log.exception("e2ee event for %s failed", self.call_id)
            await self._check_alerts()

    async def _learn(self, event: m.CallE2eeEvent) -> bool:
        """A guest's key is the one its announce carries; a device's is looked up and
        pinned on first use (a changed pin is an alert)."""
        if event.from_user.startswith(GUEST_PREFIX):
            return self._learn_announced(event)
        device = event.from_device
        keys = await device_keys(self.session, event.from_user)
        public = keys.get(device)
        if public is None:
            self.keys.refused["unknown_device"] += 1
            return False
        status = self.pins.check(event.from_user, device, public)
        if status is PinStatus.CHANGED:
            self.keys.alerts.append(
                Alert(device, "identity_changed", f"{event.from_user}'s device key changed")
            )
            return False
        self.directory[device] = public
        self.handles[device] = event.from_user
        return True

    async def _on_left(self, event: m.CallParticipant) -> None:
        gone = [d for d, h in self.handles.items() if h == event.user.handle]
        if event.state == "handoff" and event.device_id in gone:
            gone.remove(event.device_id)
        for device in gone:
            await self._forget(device)

    async def _deliver(self, message: Outgoing) -> None:
        fields: dict[str, Any] = {"call_id": self.call_id, "payload": message.payload}
        if message.to_device is not None:
            fields["to_device"] = message.to_device
        await self.session.request("call.e2ee", **fields)

    async def _leave(self) -> None:
        await self.session.request("call.leave", call_id=self.call_id)


def sdp_fingerprint(sdp: str) -> str | None:
    """The ``a=fingerprint:`` value of an SDP as announces carry it ("sha-256 AB:…")."""
    match = re.search(r"^a=fingerprint:(\S+) (\S+)", sdp, re.MULTILINE)
    return f"{match[1].lower()} {match[2].upper()}" if match else None


class DirectE2ee:
    """The signed DTLS fingerprint of a 1:1 call (docs/e2ee.md): the I/O shell of
    :class:`CallKeys` for :class:`~visavis.client.call.Call`, as ``web/e2ee/client.js`` is
    the browser's. One certificate serves every peer connection of the call (aiortc makes
    one per connection; ICE restarts make new connections), its fingerprint is announced,
    signed; a description is applied only if it carries the fingerprint the other device
    signed. Sender keys are agreed too, so a call that grows into a group keeps its keys.
    """

    def __init__(self, call: Call, identity: DeviceIdentity, pins: Pins) -> None:
        self.call = call
        self.session = call.session
        self.pins = pins
        self.certificate = RTCCertificate.generateCertificate()
        fp = next(f for f in self.certificate.getFingerprints() if f.algorithm == "sha-256")
        self.fingerprint = f"sha-256 {fp.value.upper()}"
        self.directory: dict[str, bytes] = {self.session.device_id: identity.public}
        self.handles: dict[str, str] = {}
        self.keys = CallKeys(
            call.id,
            self.session.device_id,
            identity,
            self.directory.get,
            fingerprint=self.fingerprint,
        )
        self._changed = asyncio.Event()
        self._sending = asyncio.Lock()
        self.warning = ""

    def prepare(self, pc: RTCPeerConnection) -> None:
        """Give a new peer connection the call's certificate (the one whose fingerprint
        this device signed). aiortc has no option for it: tests/e2ee/test_rtc.py guards
        the private attribute."""
        pc._RTCPeerConnection__certificates = [self.certificate]  # type: ignore[attr-defined]

    async def start(self) -> None:
        await self._send(self.keys.start())

    async def on_message(self, event: m.CallE2eeEvent) -> None:
        device = event.from_device
        if device not in self.directory:
            public = (await device_keys(self.session, event.from_user)).get(device)
            if public is None:
                self.keys.refused["unknown_device"] += 1
                return
            if self.pins.check(event.from_user, device, public) is PinStatus.CHANGED:
                self.keys.alerts.append(
                    Alert(device, "identity_changed", f"{event.from_user}'s device key changed")
                )
                self._changed.set()
                return
            self.directory[device] = public
            self.handles[device] = event.from_user
        out = self.keys.peer_joined(device) if device not in self.keys.members else []
        await self._send(out + self.keys.receive(device, event.payload))
        self._changed.set()

    async def verify(self, device: str | None, sdp: str) -> bool:
        """True if ``sdp`` carries the fingerprint ``device`` signed (waiting a bounded
        time for its announce); otherwise ``warning`` says why and the device concerned
        is told (a signed alert)."""
        deadline = time.monotonic() + ANNOUNCE_WAIT
        while device not in self.keys.peers and not self.keys.alerts:
            remaining = deadline - time.monotonic()
            if device is None or remaining <= 0:
                break
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        if not self.keys.alerts:
            if device is None or device not in self.keys.peers:
                self.keys.alerts.append(Alert(device or "", "no_identity", "no signed announce"))
            else:
                self.keys.check_fingerprint(device, sdp_fingerprint(sdp) or "")
        if not self.failed():
            return True
        alert = self.keys.alerts[0]
        if alert.reason != "peer_alert" and alert.device in self.keys.members:
            await self._send([self.keys.alert_message(alert)])
        return False

    def failed(self) -> str:
        """Why the end-to-end checks stop this call ("" while they do not): ``warning``,
        logged once, so the user learns it was a security stop and not a hang-up."""
        if self.keys.alerts and not self.warning:
            alert = self.keys.alerts[0]
            self.warning = f"end-to-end check failed: {alert.reason} ({alert.detail})"
            log.warning("call %s: %s", self.call.id, self.warning)
        return self.warning

    @property
    def verification_code(self) -> str:
        members = {d: k for d, k in self.directory.items() if d in self.keys.peers}
        members[self.session.device_id] = self.directory[self.session.device_id]
        return verification_code(self.call.id, members)

    async def _send(self, outgoing: list[Outgoing]) -> None:
        async with self._sending:
            for message in outgoing:
                fields: dict[str, Any] = {"call_id": self.call.id, "payload": message.payload}
                if message.to_device is not None:
                    fields["to_device"] = message.to_device
                with contextlib.suppress(Exception):  # a dropped message is a refused one
                    await self.session.request("call.e2ee", **fields)

    def end(self) -> None:
        self.keys.end()


__all__ = [
    "CallKeysShell",
    "DirectE2ee",
    "GroupE2ee",
    "device_keys",
    "enable_e2ee",
    "publish_identity",
]
