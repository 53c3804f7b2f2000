"""The registry and the room placements in Redis (the I/O half of the fleet).

Keys, under the deployment's Redis prefix:

* ``fleet:node:<kind>:<id>``: the node's signed record (:mod:`visavis.fleet.record`),
  written by the node every heartbeat with a TTL, so a node that stops heartbeating is
  gone ``ttl`` seconds after its last record;
* ``fleet:nodes:<kind>``: the set of node ids ever announced and not yet cleaned up
  (a record's absence, not this set, says a node is dead);
* ``fleet:room:<room>``: the node a room is placed on (set once with NX: the first
  signaling node to place it wins, every other reads its choice), moved only by a
  compare-and-set from the node it was on;
* ``fleet:room:<room>~<region>``: a *leg* of a cascaded room (its participants in
  another region, or beyond its first node's capacity), placed, moved and released
  like a room; ``fleet:legs:<room>`` lists a room's legs;
* ``fleet:at:<room>``: which placement of the room (the room itself or a leg) each
  device was sent to, so that a leg's failover moves only the devices on that leg;
* ``fleet:rooms:<id>``: the rooms (and legs) placed on a node (its size is the node's placed count);
* ``fleet:drain:<id>``: an operator's signed order to drain the node;
* ``fleet:lost:<kind>:<id>``: set when a quorum of a room's participants reported the
  node lost; no placement goes there while it lives (``ttl``: until a dead node's own
  record has expired), so rooms are not moved onto a node that just died.

Every multi-key change is one Lua script, so placements and per-node sets never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from visavis.fleet.placement import Pool
from visavis.fleet.record import NodeKind, NodeRecord, RecordChecker, RecordError, sign_record

if TYPE_CHECKING:
    import redis.asyncio as aioredis

ROOM_TTL = 2 * 86400  # a placement outlives any call; moves and ends rewrite or delete it

# KEYS: room, rooms-of-node. ARGV: node, room, ttl s. Returns the node the room is on.
_PLACE = """
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[2])
return ARGV[1]
"""

# KEYS: room, rooms-of-old, rooms-of-new. ARGV: old, new, room, ttl s. 1 if moved.
_MOVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[4])
redis.call('SREM', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[3])
return 1
"""

# KEYS: room. ARGV: room, rooms-of prefix. Returns the node it was on, or false.
_RELEASE = """
local node = redis.call('GET', KEYS[1])
if not node then return false end
redis.call('DEL', KEYS[1])
redis.call('SREM', ARGV[2] .. node, ARGV[1])
return node
"""


# KEYS: lease. ARGV: owner, ttl ms. 1 if the caller holds the lease (now renewed).
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


@dataclass
class View:
    """The registry as read at one moment: live nodes, placed counts, the dead."""

    nodes: list[NodeRecord] = field(default_factory=list)
    placed: dict[str, int] = field(default_factory=dict)
    gone: list[str] = field(default_factory=list)  # ids with no valid record
    refused: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    read_at: float = 0.0
    _pool: Pool | None = None

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            self._pool = Pool(self.nodes)
        return self._pool

    def node(self, node_id: str) -> NodeRecord | None:
        return next((n for n in self.nodes if n.node_id == node_id), None)


class RedisRegistry:
    """Registry and placements for one deployment (one Redis prefix)."""

    def __init__(self, client: aioredis.Redis, prefix: str, secret: str) -> None:
        self.client = client
        self.base = f"{prefix}fleet:"
        self.secret = secret
        self._place = client.register_script(_PLACE)
        self._move = client.register_script(_MOVE)
        self._release = client.register_script(_RELEASE)
        self._lease = client.register_script(_LEASE)

    def _node_key(self, kind: str, node_id: str) -> str:
        return f"{self.base}node:{kind}:{node_id}"

    def _rooms_key(self, node_id: str) -> str:
        return f"{self.base}rooms:{node_id}"

    def _room_key(self, room_id: str) -> str:
        return f"{self.base}room:{room_id}"

    def _lost_key(self, kind: str, node_id: str) -> str:
        return f"{self.base}lost:{kind}:{node_id}"

    # -- nodes ---------------------------------------------------------------------
    async def announce(self, record: NodeRecord, *, ttl: float) -> None:
        """Write the node's record (signed, expiring ``ttl`` seconds from now)."""
        raw = sign_record(self.secret, record, ttl=ttl)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self._node_key(record.kind, record.node_id), raw, px=max(1, int(ttl * 1000)))
            pipe.sadd(f"{self.base}nodes:{record.kind}", record.node_id)
            await pipe.execute()

    async def withdraw(self, kind: NodeKind, node_id: str) -> None:
        """Remove the node's record now (a clean shutdown: its rooms move at once)."""
        await self.client.delete(self._node_key(kind, node_id))

    async def put_raw(self, kind: NodeKind, node_id: str, raw: str, *, ttl: float) -> None:
        """Store bytes as a node's record unchecked (what anyone with Redis access can do;
        readers verify). For tests of forged and replayed records."""
        await self.client.set(self._node_key(kind, node_id), raw, px=max(1, int(ttl * 1000)))
        await self.client.sadd(f"{self.base}nodes:{kind}", node_id)

    async def raw_record(self, kind: NodeKind, node_id: str) -> str | None:
        value = await self.client.get(self._node_key(kind, node_id))
        return None if value is None else _text(value)

    async def read(
        self, kind: NodeKind, checker: RecordChecker, *, now: float, limit: int | None = None
    ) -> View:
        """Every node of ``kind`` with a valid record, with its placed-room count; with
        ``limit``, at most that many, chosen at random (a large fleet's sample)."""
        key = f"{self.base}nodes:{kind}"
        members: Iterable[bytes | str]
        if limit is not None and await self.client.scard(key) > limit:
            members = cast(list[bytes], await self.client.srandmember(key, limit))
        else:
            members = await self.client.smembers(key)
        ids = sorted(_text(m) for m in members)
        view = View(read_at=now)
        if not ids:
            return view
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.mget([self._node_key(kind, i) for i in ids])
            for node_id in ids:
                pipe.scard(self._rooms_key(node_id))
            raws, *counts = await pipe.execute()
        for node_id, raw, count in zip(ids, raws, counts, strict=True):
            view.placed[node_id] = int(count)
            if raw is None:
                view.gone.append(node_id)
                continue
            try:
                record = checker.check(_text(raw), now=now)
                if record.node_id != node_id or record.kind != kind:
                    raise RecordError("forged", "record stored under another node's key")
            except RecordError as exc:
                view.refused.append((node_id, exc.reason))
                view.gone.append(node_id)
                continue
            view.nodes.append(record)
        return view

    async def record(
        self, kind: NodeKind, node_id: str, checker: RecordChecker, *, now: float
    ) -> NodeRecord | None:
        """One node's record if it is there and valid (else None)."""
        raw = await self.raw_record(kind, node_id)
        return None if raw is None else checker.node(raw, kind, node_id, now=now)

    async def forget(self, kind: NodeKind, node_ids: Sequence[str]) -> None:
        """Drop dead nodes that have no rooms left from the node set."""
        for node_id in node_ids:
            if not await self.client.exists(self._node_key(kind, node_id)) and not (
                await self.client.scard(self._rooms_key(node_id))
            ):
                await self.client.srem(f"{self.base}nodes:{kind}", node_id)

    # -- operator orders -----------------------------------------------------------
    async def order(self, node_id: str, raw: str, *, ttl: float) -> None:
        await self.client.set(f"{self.base}drain:{node_id}", raw, px=max(1, int(ttl * 1000)))

    async def pending_order(self, node_id: str) -> str | None:
        value = await self.client.get(f"{self.base}drain:{node_id}")
        return None if value is None else _text(value)

    # -- rooms ---------------------------------------------------------------------
    async def place(self, room_id: str, node_id: str) -> str:
        """Place the room on ``node_id`` unless it is placed already; the node it is on."""
        result = await self._place(
            keys=[self._room_key(room_id), self._rooms_key(node_id)],
            args=[node_id, room_id, ROOM_TTL],
        )
        return _text(result)

    async def move(self, room_id: str, old: str, new: str) -> bool:
        """Move the room from ``old`` to ``new`` if it is still on ``old`` (one mover wins)."""
        moved = await self._move(
            keys=[self._room_key(room_id), self._rooms_key(old), self._rooms_key(new)],
            args=[old, new, room_id, ROOM_TTL],
        )
        return bool(moved)

    async def release(self, room_id: str) -> str | None:
        """Forget the room's placement (its call ended); the node it was on."""
        node = await self._release(
            keys=[self._room_key(room_id)], args=[room_id, f"{self.base}rooms:"]
        )
        return None if node is None else _text(node)

    async def placed(self, kind: NodeKind, node_ids: Sequence[str]) -> dict[str, int | None]:
        """How many rooms are placed on each of these nodes now; None for a node whose
        record is gone (dead since the view was read) or that was reported lost."""
        async with self.client.pipeline(transaction=False) as pipe:
            for node_id in node_ids:
                pipe.scard(self._rooms_key(node_id))
                pipe.exists(self._node_key(kind, node_id))
                pipe.exists(self._lost_key(kind, node_id))
            replies = await pipe.execute()
        return {
            n: int(replies[3 * i]) if replies[3 * i + 1] and not replies[3 * i + 2] else None
            for i, n in enumerate(node_ids)
        }

    async def mark_lost(self, kind: NodeKind, node_id: str, *, ttl: float) -> None:
        """Place nothing on the node for ``ttl`` seconds: its participants lost it, and its
        record (still live until its TTL runs out) must not draw rooms back to it."""
        await self.client.set(self._lost_key(kind, node_id), "1", px=max(1, int(ttl * 1000)))

    async def hold_lease(self, name: str, owner: str, *, ttl: float) -> bool:
        """Take or renew the lease ``name`` for ``owner`` (one holder at a time, until it
        stops renewing for ``ttl`` seconds). A lease, not consensus: whatever its holder
        does must stay safe if two ever overlap (room moves are compare-and-set)."""
        held = await self._lease(
            keys=[f"{self.base}lease:{name}"], args=[owner, max(1, int(ttl * 1000))]
        )
        return bool(held)

    async def add_leg(self, room_id: str, leg: str) -> None:
        key = f"{self.base}legs:{room_id}"
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.sadd(key, leg)
            pipe.expire(key, ROOM_TTL)
            await pipe.execute()

    async def legs(self, room_id: str) -> dict[str, str]:
        """The room's legs and the node each is on (legs released meanwhile left out)."""
        keys = sorted(_text(m) for m in await self.client.smembers(f"{self.base}legs:{room_id}"))
        if not keys:
            return {}
        nodes = await self.client.mget([self._room_key(k) for k in keys])
        return {k: _text(n) for k, n in zip(keys, nodes, strict=True) if n is not None}

    async def drop_legs(self, room_id: str) -> list[str]:
        """Forget the room's legs (its call ended); the leg keys, to release each."""
        key = f"{self.base}legs:{room_id}"
        legs = sorted(_text(m) for m in await self.client.smembers(key))
        await self.client.delete(key)
        return legs

    async def bind(self, room_id: str, device_id: str, placement: str) -> None:
        """``device_id`` was handed a token for ``placement`` of ``room_id``."""
        key = f"{self.base}at:{room_id}"
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, device_id, placement)
            pipe.expire(key, ROOM_TTL)
            await pipe.execute()

    async def bound(self, room_id: str) -> dict[str, str]:
        """Device id -> the placement of ``room_id`` it was last sent to."""
        raw = await self.client.hgetall(f"{self.base}at:{room_id}")
        return {_text(k): _text(v) for k, v in raw.items()}

    async def unbind(self, room_id: str) -> None:
        await self.client.delete(f"{self.base}at:{room_id}")

    async def report(self, placement: str, node_id: str, reporter: str, *, ttl: float) -> int:
        """Record that ``reporter`` lost ``node_id`` for this placement; how many distinct
        reporters did within ``ttl`` seconds (of the first report)."""
        key = f"{self.base}reports:{placement}:{node_id}"
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.sadd(key, reporter)
            pipe.expire(key, max(1, int(ttl)), nx=True)
            pipe.scard(key)
            *_, count = await pipe.execute()
        return int(count)

    async def room_node(self, room_id: str) -> str | None:
        value = await self.client.get(self._room_key(room_id))
        return None if value is None else _text(value)

    async def rooms_on(self, node_id: str) -> list[str]:
        return sorted(_text(m) for m in await self.client.smembers(self._rooms_key(node_id)))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
