"""The bus on Redis, for several signaling nodes.

Layout (every key and channel starts with ``prefix``):

* ``<prefix><channel>``: pub/sub channels. One PubSub connection per bus; a reader task
  dispatches each message to the subscriptions' queues (see ``_dispatch``).
* ``<prefix>mbox:<device>``: sorted set, score = sequence number, member
  ``"<seq>:<expires_ms>:<json>"`` (expiry per message, in Redis server time so all nodes
  agree whatever their clocks).
* ``<prefix>mseq:<device>``: the sequence counter.
* ``<prefix>presence:<device>``: node id, ``SET ... PX ttl``.

Mailbox TTLs: each append extends the sorted set's TTL to at least the message's ``ttl``
and the counter's to at least ``max(ttl, counter_ttl)`` (default 30 days); neither is
ever shortened. The counter must outlive the messages: a device connected but idle for
longer than the message TTL still holds its last number, and a counter that restarted
at 1 would make it skip everything after. Only after ``counter_ttl`` without any append
does numbering restart at 1 (then ``mailbox_head()`` is below what a returning device
last saw, and it must resynchronise). Should the counter alone disappear, the next
append resumes from the highest stored number. Individual messages are filtered by
expiry on read and pruned lazily on append.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Collection
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, TimeoutError

from visavis.bus._dispatch import QueuedSubscription
from visavis.bus.base import Bus, Handler, Subscription, device_channel

log = logging.getLogger(__name__)

MAILBOX_LIMIT = 10_000
COUNTER_TTL = 30 * 86400.0
SUBSCRIBE_TIMEOUT = 10.0
_MGET_CHUNK = 1000

# KEYS: mailbox zset, counter. ARGV: ttl ms, payload, limit, channel, counter ttl ms.
_APPEND = """
local box, counter = KEYS[1], KEYS[2]
local ttl, limit = tonumber(ARGV[1]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('EXISTS', counter) == 0 then
  local top = redis.call('ZREVRANGE', box, 0, 0, 'WITHSCORES')
  if top[2] then redis.call('SET', counter, top[2]) end
end
local seq = redis.call('INCR', counter)
local expires = string.format('%.0f', now + ttl)
redis.call('ZADD', box, seq, seq .. ':' .. expires .. ':' .. ARGV[2])
for _ = 1, 64 do
  local first = redis.call('ZRANGE', box, 0, 0)[1]
  if not first then break end
  local a = string.find(first, ':', 1, true)
  local b = string.find(first, ':', a + 1, true)
  if tonumber(string.sub(first, a + 1, b - 1)) > now then break end
  redis.call('ZREM', box, first)
end
local n = redis.call('ZCARD', box)
if n > limit then redis.call('ZREMRANGEBYRANK', box, 0, n - limit - 1) end
local counter_ttl = math.max(ttl, tonumber(ARGV[5]))
if redis.call('PTTL', box) < ttl then redis.call('PEXPIRE', box, ttl) end
if redis.call('PTTL', counter) < counter_ttl then redis.call('PEXPIRE', counter, counter_ttl) end
redis.call('PUBLISH', ARGV[4], seq)
return seq
"""

# KEYS: mailbox zset. ARGV: after. Returns flat {seq, json, seq, json, ...}, unexpired only.
_READ = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')) do
  local a = string.find(m, ':', 1, true)
  local b = string.find(m, ':', a + 1, true)
  if tonumber(string.sub(m, a + 1, b - 1)) > now then
    out[#out + 1] = string.sub(m, 1, a - 1)
    out[#out + 1] = string.sub(m, b + 1)
  end
end
return out
"""

# KEYS: presence key. ARGV: node id. Delete only if that node still holds it.
_COMPARE_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisBus(Bus):
    """:class:`Bus` on Redis (``redis://host:port/db``). Construct, then ``await open()``."""

    def __init__(
        self,
        url: str,
        prefix: str = "visavis:",
        *,
        mailbox_limit: int = MAILBOX_LIMIT,
        counter_ttl: float = COUNTER_TTL,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self._mailbox_limit = mailbox_limit
        self._counter_ttl = counter_ttl
        self._redis: aioredis.Redis | None = None
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._subs: dict[str, list[QueuedSubscription]] = {}
        self._confirmations: dict[str, deque[asyncio.Future[None]]] = {}
        self._lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------
    async def open(self) -> None:
        if self._redis is not None:
            return
        client = aioredis.Redis.from_url(self.url)
        try:
            await client.ping()
            pubsub = client.pubsub()
            await pubsub.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            await client.aclose()
            raise
        self._redis, self._pubsub = client, pubsub
        self._append = client.register_script(_APPEND)
        self._read = client.register_script(_READ)
        self._compare_delete = client.register_script(_COMPARE_DELETE)
        self._reader = asyncio.create_task(self._read_loop(pubsub), name="redis-bus-reader")

    async def close(self) -> None:
        if self._redis is None:
            return
        subs = [sub for channel_subs in self._subs.values() for sub in channel_subs]
        self._subs.clear()
        await asyncio.gather(*(sub.stop() for sub in subs))
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        for waiters in self._confirmations.values():
            for fut in waiters:
                fut.cancel()
        self._confirmations.clear()
        if self._pubsub is not None:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            self._pubsub = None
        client, self._redis = self._redis, None
        await client.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    @property
    def client(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("bus is not open: await open() first")
        return self._redis

    # -- pub/sub -----------------------------------------------------------------
    async def publish(self, channel: str, message: bytes) -> None:
        await self.client.publish(self.prefix + channel, message)

    async def subscribe(self, channel: str, handler: Handler) -> Subscription:
        """Returns once Redis has confirmed the subscription, so anything published
        afterwards, from any node, is delivered."""
        if self._pubsub is None:
            raise RuntimeError("bus is not open: await open() first")
        key = self.prefix + channel
        sub = QueuedSubscription(key, handler, self._remove)
        async with self._lock:
            subs = self._subs.setdefault(key, [])
            subs.append(sub)
            waiters = self._confirmations.get(key)
            # A second handler on a channel still being subscribed waits for the same answer.
            confirmed = waiters[-1] if waiters else None
            if len(subs) == 1:
                confirmed = asyncio.get_running_loop().create_future()
                self._confirmations.setdefault(key, deque()).append(confirmed)
                await self._pubsub.subscribe(key)
        if confirmed is not None:
            try:
                await asyncio.wait_for(asyncio.shield(confirmed), SUBSCRIBE_TIMEOUT)
            except BaseException:
                await sub.unsubscribe()
                raise
        return sub

    async def _remove(self, sub: QueuedSubscription) -> None:
        async with self._lock:
            subs = self._subs.get(sub.channel)
            if subs is None or sub not in subs:
                return
            subs.remove(sub)
            if not subs:
                del self._subs[sub.channel]
                if self._pubsub is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await self._pubsub.unsubscribe(sub.channel)

    async def _read_loop(self, pubsub: PubSub) -> None:
        """Move messages from the PubSub connection to the subscriptions' queues.

        redis-py reconnects and resubscribes by itself; messages published while the
        connection is down are lost (mailboxes are the durable path)."""
        while True:
            try:
                message = await pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, TimeoutError, OSError) as exc:
                log.warning("redis bus: pub/sub connection lost (%s); retrying", exc)
                await asyncio.sleep(0.5)
                continue
            except Exception:
                log.exception("redis bus: unexpected error reading pub/sub")
                await asyncio.sleep(0.5)
                continue
            if message is None:
                continue
            kind = message["type"]
            channel = message["channel"]
            if isinstance(channel, bytes):
                channel = channel.decode()
            if kind == "message":
                for sub in self._subs.get(channel, ()):
                    sub.push(message["data"])
            elif kind == "subscribe":
                waiters = self._confirmations.get(channel)
                if waiters:
                    fut = waiters.popleft()
                    if not fut.done():
                        fut.set_result(None)
                    if not waiters:
                        del self._confirmations[channel]

    # -- device mailboxes ----------------------------------------------------------
    def _box(self, device_id: str) -> str:
        return f"{self.prefix}mbox:{device_id}"

    def _counter(self, device_id: str) -> str:
        return f"{self.prefix}mseq:{device_id}"

    async def mailbox_append(self, device_id: str, message: dict[str, Any], *, ttl: float) -> int:
        data = json.dumps(message, separators=(",", ":"))
        seq = await self._append(
            keys=[self._box(device_id), self._counter(device_id)],
            args=[
                _ms(ttl),
                data,
                self._mailbox_limit,
                self.prefix + device_channel(device_id),
                _ms(self._counter_ttl),
            ],
        )
        return int(seq)

    async def mailbox_read(self, device_id: str, after: int) -> list[tuple[int, dict[str, Any]]]:
        flat = cast(list[bytes], await self._read(keys=[self._box(device_id)], args=[after]))
        return [(int(flat[i]), json.loads(flat[i + 1])) for i in range(0, len(flat), 2)]

    async def mailbox_head(self, device_id: str) -> int:
        value = await self.client.get(self._counter(device_id))
        return 0 if value is None else int(value)

    async def mailbox_heads(self, device_ids: Collection[str]) -> dict[str, int]:
        ids = list(device_ids)
        heads: dict[str, int] = {}
        for start in range(0, len(ids), _MGET_CHUNK):
            chunk = ids[start : start + _MGET_CHUNK]
            values = await self.client.mget([self._counter(d) for d in chunk])
            for device_id, value in zip(chunk, values, strict=True):
                heads[device_id] = 0 if value is None else int(value)
        return heads

    async def mailbox_ack(self, device_id: str, upto: int) -> None:
        await self.client.zremrangebyscore(self._box(device_id), "-inf", upto)

    # -- presence ------------------------------------------------------------------
    def _presence(self, device_id: str) -> str:
        return f"{self.prefix}presence:{device_id}"

    async def set_online(self, device_id: str, node_id: str, *, ttl: float) -> None:
        await self.client.set(self._presence(device_id), node_id, px=_ms(ttl))

    async def set_online_many(
        self, device_ids: Collection[str], node_id: str, *, ttl: float
    ) -> None:
        ids, px = list(device_ids), _ms(ttl)
        for start in range(0, len(ids), _MGET_CHUNK):  # one round trip per chunk
            async with self.client.pipeline(transaction=False) as pipe:
                for device_id in ids[start : start + _MGET_CHUNK]:
                    pipe.set(self._presence(device_id), node_id, px=px)
                await pipe.execute()

    async def set_offline(self, device_id: str, node_id: str) -> None:
        await self._compare_delete(keys=[self._presence(device_id)], args=[node_id])

    async def online(self, device_ids: Collection[str]) -> set[str]:
        ids = list(device_ids)
        found: set[str] = set()
        for start in range(0, len(ids), _MGET_CHUNK):
            chunk = ids[start : start + _MGET_CHUNK]
            values = await self.client.mget([self._presence(d) for d in chunk])
            found.update(d for d, v in zip(chunk, values, strict=True) if v is not None)
        return found
