"""Cascading: one room spanning several SFU nodes, joined by node-to-node links.

Signaling places a room's participants on several nodes (by region, or when the room's
node is full) and tells each participant's node the room's other nodes (``peers`` in the
join token). A node that gets a participant for such a room opens one link per peer node
(unless one is up: one link per pair of nodes carries all their shared rooms):

* **Control**: a WebSocket to the peer's control URL (from its signed registry record).
  The first message is a hello signed with a key derived from the shared secret for this
  purpose only (so it is never a join token nor a registry record), naming both nodes, a
  fresh nonce and the time. The peer refuses, and counts in
  ``visavis_sfu_cascade_refused_total{reason}``, a hello that is forged, for another node,
  expired, replayed (nonce seen), or from a node with no valid record in the registry
  (``unknown_node``): node identity is the registry's signed record.
* **Media**: SRTP (AES-128-CM/HMAC-SHA1-80) over UDP between the two media ports, with one
  key per direction derived from the shared secret, both node ids and both nonces (fresh
  per link, so keys are never reused across links). Each node sends to the media address
  the other announced in its record, and accepts link SRTP only from that address.

Each node forwards each local producer once per peer node that shares the room: one
*cascade consumer* per simulcast layer (the layers keep their own streams across the
link), the audio level (RFC 6464) carried in the link's extension ``LEVEL_ID``. The peer
node shows each remote participant as a :class:`RemoteParticipant` whose producers'
layers are fed by the link, so its own subscribers choose layers, detect the dominant
speaker and answer NACKs exactly as for local publishers. Keyframe requests (PLI/FIR)
for a remote layer cross the link back to the publisher's node; sender reports cross it
forwards. Payloads are never touched: SFrame passes through. Only local producers cross a
link (every pair of the room's nodes has its own link), so media makes at most one hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from visavis.protocol.rtp.errors import RtpError
from visavis.protocol.rtp.extensions import URI_AUDIO_LEVEL
from visavis.protocol.rtp.rtcp import RtcpFir, RtcpPli, RtcpSr, parse_compound
from visavis.sfu import fastpath
from visavis.sfu.room import Consumer, Participant, Producer, Room
from visavis.sfu.stats import SfuStats
from visavis.sfu.transport import Address, WebRtcTransport
from visavis.tokens import TokenError, sign_token, verify_token

if TYPE_CHECKING:
    from visavis.fleet.record import NodeRecord
    from visavis.sfu.dtls import DtlsIdentity
    from visavis.sfu.udp import MediaEndpoint

log = logging.getLogger(__name__)

PURPOSE = "visavis-cascade-v1"
HELLO_TTL = 30.0  # seconds a hello is valid (clock skew between nodes included)
LEVEL_ID = 1  # the link's RTP header extension id for the audio level
REFUSALS = ("forged", "expired", "wrong_node", "replayed", "unknown_node", "malformed")
KEY_BYTES = 30  # AES-128-CM key (16) + salt (14)
GONE_AFTER = 10  # dials in a row to a peer with no registry record before giving it up

Lookup = Callable[[str], Awaitable["NodeRecord | None"]]


class CascadeRefused(Exception):
    """A link hello refused; ``reason`` is the metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _key(secret: str) -> str:
    return hmac.new(secret.encode(), PURPOSE.encode(), hashlib.sha256).hexdigest()


def sign_hello(secret: str, src: str, dst: str, nonce: str, *, now: float) -> str:
    """The dialing node's hello: from ``src`` to ``dst``, fresh ``nonce``."""
    payload = {"purpose": PURPOSE, "from": src, "to": dst, "nonce": nonce}
    return sign_token(_key(secret), payload, now=now, ttl=HELLO_TTL)


def check_hello(secret: str, raw: str, me: str, *, now: float) -> tuple[str, str]:
    """(dialing node, nonce) of a valid hello for ``me``; :class:`CascadeRefused` if not
    (the registry check of the dialing node is the caller's)."""
    try:
        payload = verify_token(_key(secret), raw, now=now)
    except TokenError as exc:
        text = str(exc)
        reason = (
            "forged" if "signature" in text else "expired" if "expired" in text else "malformed"
        )
        raise CascadeRefused(reason, text) from exc
    src, dst, nonce = payload.get("from"), payload.get("to"), payload.get("nonce")
    if payload.get("purpose") != PURPOSE or not all(
        isinstance(v, str) and 0 < len(v) <= 200 for v in (src, dst, nonce)
    ):
        raise CascadeRefused("malformed", "not a cascade hello")
    if dst != me:
        raise CascadeRefused("wrong_node", f"hello is for node {dst!r}")
    assert isinstance(src, str) and isinstance(nonce, str)
    return src, nonce


def link_keys(secret: str, dialer: str, acceptor: str, n1: str, n2: str) -> tuple[bytes, bytes]:
    """SRTP keys (dialer to acceptor, acceptor to dialer) of one link."""
    base = _key(secret).encode()

    def derive(direction: str) -> bytes:
        info = "\x00".join(("srtp", dialer, acceptor, n1, n2, direction)).encode()
        return hmac.new(base, info, hashlib.sha256).digest()[:KEY_BYTES]

    return derive("forward"), derive("backward")


def media_address(record: NodeRecord) -> Address | None:
    """The UDP media address a node announced (``udp://host:port (media)``)."""
    for item in record.media:
        text = item.split(" ", 1)[0]
        if text.startswith("udp://"):
            host, _, port = text[6:].rpartition(":")
            if host and port.isdigit():
                return host.strip("[]"), int(port)
    return None


class RemoteParticipant(Participant):
    """A participant of another node, as this node's room sees it (fed by a link)."""

    remote = True


class CascadeTransport(WebRtcTransport):
    """The media half of a link: SRTP with derived keys to the peer's media address."""

    def __init__(
        self,
        identity: DtlsIdentity,
        stats: SfuStats,
        sendto: Callable[[bytes, Address], None],
        listener: PeerLink,
        *,
        address: Address,
        rx_key: bytes,
        tx_key: bytes,
        now: float,
    ) -> None:
        super().__init__(identity, stats, sendto, listener, now=now)
        profile = fastpath.PROFILE_AES128_CM_SHA1_80
        self.link.rx = fastpath.Session(rx_key, profile, False)
        self.link.tx = fastpath.Session(tx_key, profile, True)
        self.address = address
        self.addresses.add(address)
        self.connected = True


class _Subscriber:
    """The peer node as a subscriber of one room here: its cascade consumers."""

    def __init__(self, link: PeerLink) -> None:
        self.transport = link.transport
        self.consumers: dict[str, Consumer] = {}
        self.consumers_by_ssrc = link.consumers  # one table per link: PLIs find them


class Bridge:
    """One room shared with one peer node."""

    def __init__(self, link: PeerLink, room: Room) -> None:
        self.link = link
        self.room = room
        self.subscriber = _Subscriber(link)
        self.remote: dict[str, RemoteParticipant] = {}

    # -- what this node sends ---------------------------------------------------------
    def start(self, now: float) -> None:
        for participant in list(self.room.participants.values()):
            if not getattr(participant, "remote", False):
                self.joined(participant)
                for producer in participant.producers.values():
                    self.published(producer, now)

    def joined(self, participant: Participant) -> None:
        self.link.send({"t": "joined", "room": self.room.id, "p": participant.info().model_dump()})

    def left(self, participant: Participant, reason: str) -> None:
        self.link.send({"t": "left", "room": self.room.id, "pid": participant.id, "reason": reason})

    def published(self, producer: Producer, now: float) -> None:
        """Forward ``producer`` to the peer: a cascade consumer per layer."""
        ext = {URI_AUDIO_LEVEL: LEVEL_ID} if not producer.is_video else {}
        ssrcs = []
        for layer in producer.layers:
            mid = f"{producer.id}#{layer.index}"
            consumer = Consumer(self.subscriber, producer, mid, producer.pt, None, ext)  # type: ignore[arg-type]
            if producer.is_video:
                consumer.selector.set_target(layer.index)
            self.subscriber.consumers[mid] = consumer
            self.link.consumers[consumer.ssrc] = consumer
            producer.consumers.append(consumer)
            ssrcs.append(consumer.ssrc)
        self.link.send(
            {
                "t": "producer",
                "room": self.room.id,
                "pid": producer.participant.id,
                "mid": producer.mid,
                "kind": producer.kind,
                "source": producer.source,
                "clock_rate": producer.clock_rate,
                "pt": producer.pt,
                "ssrcs": ssrcs,
            }
        )
        if producer.is_video:
            for layer in producer.layers:
                self.room.request_keyframe(producer, layer.index, now)

    def unpublished(self, producer: Producer) -> None:
        """``producer`` stopped (a screen share ended): stop forwarding it to the peer."""
        for layer in producer.layers:
            consumer = self.subscriber.consumers.pop(f"{producer.id}#{layer.index}", None)
            if consumer is not None:
                self.link.consumers.pop(consumer.ssrc, None)
        self.link.send(
            {
                "t": "unpublished",
                "room": self.room.id,
                "pid": producer.participant.id,
                "mid": producer.mid,
            }
        )

    # -- what the peer sends ------------------------------------------------------------
    def on_joined(self, info: dict[str, Any], now: float) -> None:
        pid = str(info["participant_id"])
        if pid in self.room.participants:
            return  # also here (a stale copy): the local one wins
        participant = RemoteParticipant(
            self.room,
            pid,
            str(info["user"]),
            str(info["device"]),
            lambda _: self.link.transport,
            lambda _: None,
            now,
        )
        self.remote[pid] = participant
        self.room.add(participant)

    def on_left(self, pid: str, reason: str) -> None:
        participant = self.remote.pop(pid, None)
        if participant is not None:
            self._unbind(participant)
            self.room.remove(participant, reason if reason in ("left", "timeout") else "left")

    def on_producer(self, msg: dict[str, Any], now: float) -> None:
        participant = self.remote.get(str(msg["pid"]))
        kind = msg["kind"]
        ssrcs = [int(s) & 0xFFFFFFFF for s in msg["ssrcs"]][:3]
        if participant is None or kind not in ("audio", "video") or not ssrcs:
            return
        mid = str(msg["mid"])[:32]
        if mid in participant.producers:
            return
        producer = Producer(
            participant,
            mid,
            kind,
            int(msg["clock_rate"]),
            int(msg["pt"]) & 0x7F,
            None,
            [f"l{i}" for i in range(len(ssrcs))] if len(ssrcs) > 1 else [],
            ssrcs[0] if len(ssrcs) == 1 else None,
            None,
            LEVEL_ID if kind == "audio" else None,
            "screen" if msg.get("source") == "screen" else None,
        )
        for layer, ssrc in zip(producer.layers, ssrcs, strict=True):
            layer.ssrc = ssrc
            participant._bind_ssrc(ssrc, producer, layer, False)
            self.link.remote_ssrcs[ssrc] = participant
        participant.producers[mid] = producer
        for other in self.room.participants.values():
            if other is not participant and not getattr(other, "remote", False):
                self.room.renegotiate_later(other)

    def on_unpublished(self, pid: str, mid: str) -> None:
        participant = self.remote.get(pid)
        producer = participant.producers.get(mid) if participant is not None else None
        if producer is None:
            return
        for layer in producer.layers:
            if layer.ssrc is not None:
                self.link.remote_ssrcs.pop(layer.ssrc, None)
        self.room.unpublish(producer)

    def close(self) -> None:
        """Stop forwarding to the peer and remove its participants from the room."""
        for consumer in list(self.subscriber.consumers.values()):
            self.link.consumers.pop(consumer.ssrc, None)
            if consumer in consumer.producer.consumers:
                consumer.producer.consumers.remove(consumer)
        self.subscriber.consumers.clear()
        for pid in list(self.remote):
            self.on_left(pid, "left")

    def _unbind(self, participant: RemoteParticipant) -> None:
        for ssrc in participant.ssrc_map:
            self.link.transport.link.sources.pop(ssrc, None)
            self.link.remote_ssrcs.pop(ssrc, None)


class PeerLink:
    """The link to one peer node: its control WebSocket, its SRTP transport, the rooms
    shared over it."""

    def __init__(
        self, node: Cascade, peer: str, dialer: str, ws: Any, transport_args: dict[str, Any]
    ) -> None:
        self.node = node
        self.peer = peer
        self.dialer = dialer
        self.ws = ws
        self.consumers: dict[int, Consumer] = {}
        self.remote_ssrcs: dict[int, RemoteParticipant] = {}
        self.bridges: dict[str, Bridge] = {}
        self.opened: set[str] = set()  # rooms we said we have
        self.peer_open: set[str] = set()  # rooms the peer said it has
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.transport = CascadeTransport(listener=self, **transport_args)

    def send(self, message: dict[str, Any]) -> None:
        self.outbox.put_nowait(json.dumps(message, separators=(",", ":")))

    # -- TransportListener: the link's media --------------------------------------------
    def on_transport_connected(self, now: float) -> None:
        pass

    def on_rtp(self, data: bytes, now: float) -> None:
        self.node.stats.drop("unknown_ssrc")  # media ahead of its producer message

    def on_rtcp(self, data: bytes, now: float) -> None:
        try:
            packets = parse_compound(data)
        except RtpError:
            self.node.stats.drop("malformed_rtcp")
            return
        for packet in packets:
            if isinstance(packet, RtcpPli | RtcpFir):
                ssrcs = (
                    [packet.media_ssrc]
                    if isinstance(packet, RtcpPli)
                    else [s for s, _ in packet.entries]
                )
                for ssrc in ssrcs:
                    consumer = self.consumers.get(ssrc)
                    if consumer is not None:
                        room = consumer.producer.participant.room
                        room.request_keyframe(consumer.producer, consumer.selector.target, now)
            elif isinstance(packet, RtcpSr):
                participant = self.remote_ssrcs.get(packet.ssrc)
                if participant is not None:
                    participant._on_sender_report(packet, now)

    # -- rooms ---------------------------------------------------------------------------
    def open(self, room_id: str) -> None:
        if room_id not in self.opened:
            self.opened.add(room_id)
            self.send({"t": "open", "room": room_id})
        self._activate(room_id)

    def _activate(self, room_id: str) -> None:
        room = self.node.rooms().get(room_id)
        if (
            room is not None
            and room_id in self.opened
            and room_id in self.peer_open
            and room_id not in self.bridges
        ):
            bridge = self.bridges[room_id] = Bridge(self, room)
            room.links[self.peer] = bridge
            bridge.start(time.monotonic())

    def close_room(self, room_id: str, *, tell: bool) -> None:
        bridge = self.bridges.pop(room_id, None)
        if bridge is not None:
            bridge.room.links.pop(self.peer, None)
            bridge.close()
        if tell and room_id in self.opened:
            self.send({"t": "close", "room": room_id})
        self.opened.discard(room_id)

    def handle(self, msg: dict[str, Any]) -> None:
        """One control message from the peer."""
        kind, room_id = msg.get("t"), msg.get("room")
        if not isinstance(room_id, str):
            raise ValueError("no room")
        now = time.monotonic()
        if kind == "open":
            self.peer_open.add(room_id)
            self.node.wanted.setdefault(room_id, set()).add(self.peer)
            if room_id in self.node.rooms():
                self.open(room_id)
            return
        if kind == "close":
            self.peer_open.discard(room_id)
            bridge = self.bridges.pop(room_id, None)
            if bridge is not None:
                bridge.room.links.pop(self.peer, None)
                bridge.close()
            return
        bridge = self.bridges.get(room_id)
        if bridge is None:
            return  # for a room already closed here
        if kind == "joined":
            bridge.on_joined(msg["p"], now)
        elif kind == "left":
            bridge.on_left(str(msg["pid"]), str(msg.get("reason", "left")))
        elif kind == "producer":
            bridge.on_producer(msg, now)
        elif kind == "unpublished":
            bridge.on_unpublished(str(msg["pid"]), str(msg["mid"]))
        else:
            raise ValueError(f"unknown message {kind!r}")

    def closed(self) -> None:
        for room_id in list(self.bridges):
            self.close_room(room_id, tell=False)
        self.node.endpoint.remove(self.transport)


class Cascade:
    """This node's links to the other nodes of its rooms."""

    def __init__(
        self,
        *,
        node_id: str,
        secret: str,
        identity: DtlsIdentity,
        stats: SfuStats,
        endpoint: MediaEndpoint,
        rooms: Callable[[], dict[str, Room]],
        lookup: Lookup,
        refused: Callable[[str], None],
    ) -> None:
        self.node_id = node_id
        self.secret = secret
        self.identity = identity
        self.stats = stats
        self.endpoint = endpoint
        self.rooms = rooms
        self.lookup = lookup
        self.refused = refused
        self.links: dict[str, PeerLink] = {}
        self.wanted: dict[str, set[str]] = {}  # room -> peer nodes that share it
        self._dialing: dict[str, asyncio.Task[None]] = {}
        self._nonces: dict[str, float] = {}
        self.links_opened = 0

    # -- rooms ----------------------------------------------------------------------
    def room_peers(self, room_id: str, peers: list[str]) -> None:
        """A participant joined ``room_id``, which also lives on ``peers``."""
        known = self.wanted.setdefault(room_id, set())
        known.update(p for p in peers if p != self.node_id)
        for peer in known:
            link = self.links.get(peer)
            if link is not None:
                link.open(room_id)
            elif peer not in self._dialing:
                self._dialing[peer] = asyncio.create_task(self._dial(peer))

    def room_closed(self, room_id: str) -> None:
        """The last local participant left: the peers stop sending to us."""
        for link in self.links.values():
            link.close_room(room_id, tell=True)
        self.wanted.pop(room_id, None)

    async def close(self) -> None:
        for task in self._dialing.values():
            task.cancel()
        for link in list(self.links.values()):
            link.outbox.put_nowait(None)
            with contextlib.suppress(Exception):
                await link.ws.close()

    # -- dialing --------------------------------------------------------------------------
    async def _dial(self, peer: str) -> None:
        """Keep a link to ``peer`` while some room here shares it: dial again a second
        after it drops or a dial fails (a lost link between two live nodes comes back by
        itself). A peer gone from the registry for ``GONE_AFTER`` dials in a row is
        dead: its rooms moved elsewhere, so stop wanting it."""
        gone = 0
        try:
            while any(peer in w for w in self.wanted.values()):
                if peer in self.links:  # up (the peer dialed us): nothing to do for now
                    gone = 0
                    await asyncio.sleep(1.0)
                    continue
                try:
                    await self._connect(peer)  # returns when the link drops
                    gone = 0
                except CascadeRefused as exc:
                    gone = gone + 1 if exc.reason == "unknown_node" else 0
                    log.warning("cascade: link to %s failed: %s", peer, exc)
                    if gone >= GONE_AFTER:
                        for peers in self.wanted.values():
                            peers.discard(peer)
                        return
                except (OSError, WebSocketException, TimeoutError) as exc:
                    log.warning("cascade: link to %s failed: %s", peer, exc)
                await asyncio.sleep(1.0)
        finally:
            self._dialing.pop(peer, None)

    async def _connect(self, peer: str) -> None:
        record = await self.lookup(peer)
        if record is None:
            raise CascadeRefused("unknown_node", f"node {peer} is not in the registry")
        address = media_address(record)
        if address is None:
            raise CascadeRefused("malformed", f"node {peer} announced no UDP media address")
        nonce = secrets.token_hex(16)
        async with connect(record.control_url, open_timeout=5, max_size=1 << 20) as ws:
            await ws.send(
                json.dumps(
                    {
                        "type": "cascade",
                        "token": sign_hello(
                            self.secret, self.node_id, peer, nonce, now=time.time()
                        ),
                    }
                )
            )
            reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if not isinstance(reply, dict) or reply.get("type") != "cascade_ok":
                raise CascadeRefused("refused", f"node {peer} refused the link: {reply}")
            # The answer is signed too: control messages come only from the real peer.
            src, theirs = check_hello(
                self.secret, str(reply.get("token")), self.node_id, now=time.time()
            )
            if src != peer:
                raise CascadeRefused("forged", f"{record.control_url} answered as {src}")
            forward, backward = link_keys(self.secret, self.node_id, peer, nonce, theirs)
            await self._run(peer, ws, address, rx=backward, tx=forward, dialer=self.node_id)

    # -- accepting ----------------------------------------------------------------------
    async def accept(self, ws: Any, token: str) -> None:
        """A peer dialed us (its hello in ``token``): check it, then run the link."""
        now = time.time()
        try:
            peer, nonce = check_hello(self.secret, token, self.node_id, now=now)
            if nonce in self._nonces:
                raise CascadeRefused("replayed", "hello replayed")
            record = await self.lookup(peer)
            if record is None or record.kind != "sfu":
                raise CascadeRefused("unknown_node", f"node {peer!r} is not in the registry")
            address = media_address(record)
            if address is None:
                raise CascadeRefused("malformed", f"node {peer} announced no UDP media address")
        except CascadeRefused as exc:
            self.refused(exc.reason)
            log.warning("cascade: refused a link: %s (%s)", exc, exc.reason)
            with contextlib.suppress(ConnectionClosed):
                await ws.send(
                    json.dumps({"type": "error", "code": "unauthorized", "message": str(exc)})
                )
            return
        self._nonces[nonce] = now + HELLO_TTL
        for old, expiry in list(self._nonces.items()):
            if expiry < now:
                del self._nonces[old]
        mine = secrets.token_hex(16)
        answer = sign_hello(self.secret, self.node_id, peer, mine, now=now)
        await ws.send(json.dumps({"type": "cascade_ok", "token": answer}))
        forward, backward = link_keys(self.secret, peer, self.node_id, nonce, mine)
        await self._run(peer, ws, address, rx=forward, tx=backward, dialer=peer)

    async def _run(
        self, peer: str, ws: Any, address: Address, *, rx: bytes, tx: bytes, dialer: str
    ) -> None:
        old = self.links.get(peer)
        if old is not None:
            # Both nodes dialed at once (or the peer reconnected): both keep the link the
            # smaller node id dialed, or the newest if that is not decisive.
            if old.dialer != dialer and dialer != min(peer, self.node_id):
                await ws.close()
                return
            old.outbox.put_nowait(None)
            del self.links[peer]
            old.closed()
        link = PeerLink(
            self,
            peer,
            dialer,
            ws,
            {
                "identity": self.identity,
                "stats": self.stats,
                "sendto": self.endpoint.sendto,
                "address": address,
                "rx_key": rx,
                "tx_key": tx,
                "now": time.monotonic(),
            },
        )
        self.links[peer] = link
        self.links_opened += 1
        self.endpoint.bind(link.transport, address)
        log.info("cascade: link to %s up (media %s:%d)", peer, *address)
        sender = asyncio.create_task(self._send_loop(link))
        for room_id, peers in self.wanted.items():
            if peer in peers and room_id in self.rooms():
                link.open(room_id)
        try:
            async for raw in ws:
                try:
                    msg = json.loads(raw)
                    if not isinstance(msg, dict):
                        raise ValueError("not an object")
                    link.handle(msg)
                except (ValueError, KeyError, TypeError) as exc:
                    self.stats.drop("cascade_bad_message")
                    log.warning("cascade: bad message from %s: %s", peer, exc)
        except ConnectionClosed:
            pass
        finally:
            sender.cancel()
            if self.links.get(peer) is link:
                del self.links[peer]
                link.closed()
                log.info("cascade: link to %s down", peer)

    @staticmethod
    async def _send_loop(link: PeerLink) -> None:
        while True:
            text = await link.outbox.get()
            if text is None:
                await link.ws.close()
                return
            try:
                await link.ws.send(text)
            except ConnectionClosed:
                return
