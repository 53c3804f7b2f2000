"""The SFU service: a control WebSocket, the one media UDP port (and its ICE-TCP
fallback port), the rooms, one timer.

``SfuServer(settings)`` follows :class:`visavis.service.Service`: ``start()`` binds the
ports (0 allowed), ``control_url``, ``media_port`` and ``tcp_port`` say where,
``close()`` stops it.
Each participant opens ``ws://host:port/sfu`` and sends ``join`` with the token signaling
signed (``visavis.tokens``); see :mod:`visavis.sfu.messages` and ``docs/sfu.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, ValidationError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from visavis.config import Settings
from visavis.fleet.settings import uses_registry
from visavis.protocol.rtp.keyframes import VideoCodec
from visavis.protocol.sdp import AnswerParams
from visavis.sfu.dtls import DtlsIdentity
from visavis.sfu.errors import AuthError, ProtocolError, SfuError
from visavis.sfu.messages import (
    CascadeHello,
    DominantSpeaker,
    Error,
    Join,
    Joined,
    Layout,
    Leave,
    Offer,
    client_message_adapter,
)
from visavis.sfu.room import Participant, Room
from visavis.sfu.settings import SfuSettings
from visavis.sfu.stats import SfuStats, StatsCollector
from visavis.sfu.tcp import IceTcpListener
from visavis.sfu.transport import WebRtcTransport
from visavis.sfu.udp import MediaEndpoint
from visavis.tokens import TokenError, verify_token

if TYPE_CHECKING:
    from visavis.fleet.agent import FleetAgent, Load
    from visavis.sfu.cascade import Cascade, Lookup

logger = logging.getLogger(__name__)


class SfuServer:
    """Selective forwarding unit for group calls."""

    name = "sfu"

    def __init__(
        self, settings: Settings, *, metrics_registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.sfu = settings.sfu
        self.registry = metrics_registry if metrics_registry is not None else CollectorRegistry()
        self.stats = SfuStats()
        self.rooms: dict[str, Room] = {}
        self.identity = DtlsIdentity()
        self.endpoint = MediaEndpoint(self.stats, self.sfu.allowed_networks, self.sfu.gso)
        self._secret = ""
        self._ws: Server | None = None
        self.tcp: IceTcpListener | None = None
        self._tcp_port: int | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._control_port = 0
        self._media_port = 0
        self.registry.register(StatsCollector(self.stats, self._gauges))
        self.fleet: FleetAgent | None = None  # heartbeat into the fleet registry (Redis bus)
        self.joins_refused = Counter(
            "visavis_sfu_joins_refused_total",
            "Joins refused, by reason (wrong_node: the room is placed on another node)",
            ["reason"],
            registry=self.registry,
        )
        self.control_refused = Counter(
            "visavis_sfu_control_refused_total",
            "Control messages of joined clients refused, by error code (bad_sdp, "
            "protocol_error...)",
            ["code"],
            registry=self.registry,
        )
        self.cascade: Cascade | None = None  # links to the other nodes of shared rooms
        self.cascade_refused = Counter(
            "visavis_sfu_cascade_refused_total",
            "Node-to-node links refused, by reason (unknown_node: no valid registry record)",
            ["reason"],
            registry=self.registry,
        )

    # -- Service ------------------------------------------------------------------------
    async def start(self) -> None:
        self._secret = self.settings.ensure_shared_secret()
        media_host = self.sfu.media_host or self.sfu.host
        self._media_port = self.endpoint.open(media_host, self.sfu.media_port)
        if self.sfu.tcp_port is not None:
            self.tcp = IceTcpListener(self.endpoint)
            try:
                self._tcp_port = await self.tcp.start(media_host, self.sfu.tcp_port)
            except OSError:
                self.endpoint.close()
                raise
        self._ws = await serve(
            self._handle,
            self.sfu.host,
            self.sfu.port,
            max_size=256 * 1024,
            ping_interval=20,
            ping_timeout=20,
        )
        sockets = list(self._ws.sockets)
        self._control_port = sockets[0].getsockname()[1]
        self._tick_task = asyncio.create_task(self._ticker())
        if uses_registry(self.settings):
            from visavis.fleet.agent import FleetAgent  # loads redis: fleets only

            fleet = self.fleet = FleetAgent(self.settings, "sfu", self._fleet_load)
            await fleet.start()
            self.link_nodes(lambda node: fleet.lookup("sfu", node))

    def link_nodes(self, lookup: Lookup) -> None:
        """Cascade rooms with the other nodes their join tokens name, each trusted by its
        signed record from ``lookup``: the fleet registry's, or (SFU workers of one
        ``visavis serve``, :mod:`visavis.child`) the records the parent passed on."""
        from visavis.sfu.cascade import Cascade

        self.cascade = Cascade(
            node_id=self.settings.node_id,
            secret=self._secret,
            identity=self.identity,
            stats=self.stats,
            endpoint=self.endpoint,
            rooms=lambda: self.rooms,
            lookup=lookup,
            refused=lambda reason: self.cascade_refused.labels(reason).inc(),
        )

    def _fleet_load(self) -> Load:
        from visavis.fleet.agent import Load

        gauges = self._gauges()
        return Load(
            control_url=self.control_url,
            media=tuple(self.endpoints()[1:]),
            rooms=int(gauges["rooms"]),
            participants=int(gauges["participants"]),
            packets=self.stats.packets_forwarded,
        )

    async def close(self) -> None:
        if self.cascade is not None:
            await self.cascade.close()
        if self.fleet is not None:
            await self.fleet.close()
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
        for room in list(self.rooms.values()):
            for participant in list(room.participants.values()):
                room.remove(participant, "left")
        self.rooms.clear()
        if self._ws is not None:
            self._ws.close()
            await self._ws.wait_closed()
        self.endpoint.close()
        if self.tcp is not None:
            self.tcp.close()

    def endpoints(self) -> list[str]:
        found = [self.control_url, f"udp://{self.announced_address}:{self._media_port} (media)"]
        if self._tcp_port is not None:
            found.append(f"tcp://{self.announced_address}:{self._tcp_port} (media, ICE-TCP)")
        return found

    @property
    def control_url(self) -> str:
        """The WebSocket URL signaling hands to participants."""
        if self.sfu.public_url:
            return self.sfu.public_url
        host = self.sfu.host if self.sfu.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"ws://{host}:{self._control_port}/sfu"

    @property
    def media_port(self) -> int:
        return self._media_port

    @property
    def tcp_port(self) -> int | None:
        """The ICE-TCP port (None: disabled)."""
        return self._tcp_port

    @property
    def announced_address(self) -> str:
        if self.sfu.announced_address:
            return self.sfu.announced_address
        host = self.sfu.media_host or self.sfu.host
        return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host

    @property
    def _candidates(self) -> list[tuple[str, int, str]]:
        found = [(self.announced_address, self._media_port, "udp")]
        if self._tcp_port is not None:  # lower priority than UDP (sdp.py)
            found.append((self.announced_address, self._tcp_port, "tcp"))
        return found

    def occupancy(self) -> tuple[int, int]:
        """Rooms and local participants now (the load a worker reports to its parent)."""
        return len(self.rooms), sum(r.local() for r in self.rooms.values())

    def _gauges(self) -> dict[str, float]:
        return {
            "rooms": len(self.rooms),
            "participants": sum(r.local() for r in self.rooms.values()),
        }

    # -- rooms --------------------------------------------------------------------------
    def _answer_params(self, transport: WebRtcTransport) -> AnswerParams:
        return AnswerParams(
            ice_ufrag=transport.local_ufrag,
            ice_pwd=transport.local_pwd,
            fingerprint=f"sha-256 {self.identity.fingerprint}",
            candidates=self._candidates,
        )

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.sfu.tick_interval)
            now = time.monotonic()
            for room_id, room in list(self.rooms.items()):
                try:
                    for _ in room.tick_steps(now, []):
                        await asyncio.sleep(0)  # the media socket is read between steps
                except Exception:  # one room's bug must not stop the others' timers
                    logger.exception("room %s tick failed", room_id)
                if self.rooms.get(room_id) is not room:
                    continue  # closed meanwhile
                if not room.local():  # only remote participants (or none) left
                    if self.cascade is not None:
                        self.cascade.room_closed(room_id)
                    del self.rooms[room_id]

    # -- control WebSocket ----------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        outbox: asyncio.Queue[BaseModel | None] = asyncio.Queue()
        sender = asyncio.create_task(self._send_loop(ws, outbox))
        participant: Participant | None = None
        try:
            joined = await self._join(ws, outbox)
            if isinstance(joined, CascadeHello):  # another node opening a link
                sender.cancel()
                if self.cascade is not None:
                    await self.cascade.accept(ws, joined.token)
                else:
                    self.cascade_refused.labels("no_fleet").inc()
                return
            participant = joined
            if participant is None:
                return
            async for raw in ws:
                if participant.closed:
                    break
                try:
                    message = client_message_adapter.validate_json(raw)
                except ValidationError as exc:
                    self.control_refused.labels("protocol_error").inc()
                    outbox.put_nowait(Error(code="protocol_error", message=_brief(exc)))
                    continue
                try:
                    if isinstance(message, Offer):
                        result = participant.room.handle_offer(
                            participant, message.sdp, time.monotonic(), message.screen
                        )
                        outbox.put_nowait(result.answer)
                        if result.renegotiate is not None:
                            outbox.put_nowait(result.renegotiate)
                    elif isinstance(message, Layout):
                        participant.room.set_layout(
                            participant, message.visible, message.thumbnails, time.monotonic()
                        )
                    elif isinstance(message, Leave):
                        break
                    else:
                        raise ProtocolError("already joined")
                except SfuError as exc:
                    self.control_refused.labels(exc.code).inc()
                    outbox.put_nowait(Error(code=exc.code, message=exc.message))
        except ConnectionClosed:
            pass
        finally:
            if participant is not None and not participant.closed:
                participant.room.remove(participant, "left")
            outbox.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sender, 2.0)
            sender.cancel()
            with contextlib.suppress(Exception):
                await ws.close()

    async def _join(
        self, ws: ServerConnection, outbox: asyncio.Queue[BaseModel | None]
    ) -> Participant | CascadeHello | None:
        try:
            raw = await asyncio.wait_for(ws.recv(), self.sfu.join_timeout)
            message = client_message_adapter.validate_json(raw)
            if isinstance(message, CascadeHello):
                return message
            if not isinstance(message, Join):
                raise ProtocolError("the first message must be join")
            claims = self._verify(message)
        except (TimeoutError, ValidationError) as exc:
            outbox.put_nowait(Error(code="protocol_error", message=f"expected join: {exc!s:.200}"))
            return None
        except SfuError as exc:
            outbox.put_nowait(Error(code=exc.code, message=exc.message))
            return None
        room_id = str(claims["room"])
        room = self.rooms.get(room_id)
        if room is None:
            room = self.rooms[room_id] = Room(
                room_id,
                self.sfu,
                self.stats,
                self._answer_params,
                self.endpoint.forwarder,
                room_codec(claims, self.sfu),
            )
        if len(room.participants) >= self.sfu.max_participants:
            outbox.put_nowait(Error(code="room_full", message="the room is full"))
            return None
        participant_id = f"{claims['user']}/{claims['device']}"
        previous = room.participants.get(participant_id)
        if previous is not None:
            room.remove(previous, "replaced")
        now = time.monotonic()

        def factory(p: Participant) -> WebRtcTransport:
            transport = WebRtcTransport(self.identity, self.stats, self.endpoint.sendto, p, now=now)
            self.endpoint.add(transport)
            return transport

        participant = Participant(
            room,
            participant_id,
            str(claims["user"]),
            str(claims["device"]),
            factory,
            outbox.put_nowait,
            now,
        )

        def removed(reason: str) -> None:
            self.endpoint.remove(participant.transport)
            if reason != "left":
                outbox.put_nowait(Error(code="removed", message=f"removed from room: {reason}"))
                outbox.put_nowait(None)

        participant.on_removed = removed
        counts = room.available(participant)
        joined = Joined(
            room_id=room_id,
            participant_id=participant_id,
            participants=[p.info() for p in room.participants.values()],
            audio=counts["audio"],
            video=counts["video"],
            video_codec=room.video_codec.name.lower(),
        )
        room.add(participant)
        outbox.put_nowait(joined)
        if self.cascade is not None:
            peers = claims.get("peers")
            self.cascade.room_peers(
                room_id, [str(p) for p in peers] if isinstance(peers, list) else []
            )
        if room.speaker.dominant is not None:  # changes are announced; a joiner needs the now
            outbox.put_nowait(DominantSpeaker(participant_id=room.speaker.dominant))
        return participant

    def _verify(self, message: Join) -> dict[str, Any]:
        try:
            claims = verify_token(self._secret, message.token, now=time.time())
        except TokenError as exc:
            raise AuthError(f"join token rejected: {exc}") from exc
        for key in ("room", "user", "device"):
            if not isinstance(claims.get(key), str) or not claims[key]:
                raise AuthError(f"join token has no {key}")
        codec = claims.get("codec")
        if codec is not None and codec not in ("vp8", "vp9", "h264", "av1"):
            raise AuthError(f"join token names an unknown video codec {codec!r:.20}")
        node = claims.get("node")
        if node is not None and node != self.settings.node_id:
            # Signaling placed this room on another node: joining here would split the room.
            self.joins_refused.labels("wrong_node").inc()
            raise AuthError(f"join token is for a room placed on another node ({node})")
        return claims

    @staticmethod
    async def _send_loop(ws: ServerConnection, outbox: asyncio.Queue[BaseModel | None]) -> None:
        while True:
            message = await outbox.get()
            if message is None:
                await ws.close()
                return
            try:
                await ws.send(message.model_dump_json())
            except ConnectionClosed:
                return


def room_codec(claims: dict[str, Any], settings: SfuSettings) -> VideoCodec:
    """The video codec of a room its first join creates: the token's ``codec`` claim
    (signaling's choice for the call), else the SFU's ``video_codec`` setting."""
    return VideoCodec.from_name(str(claims.get("codec") or settings.video_codec))


def _brief(exc: ValidationError) -> str:
    return json.dumps([e["msg"] for e in exc.errors()][:3])
