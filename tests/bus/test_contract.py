"""The Bus contract, run against MemoryBus and RedisBus (see conftest.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.waiting import until
from visavis.bus import open_bus
from visavis.bus.base import Bus, device_channel
from visavis.bus.memory import MemoryBus

from .conftest import Backend

TIMEOUT = 5.0


class Collector:
    """A handler that records what it gets and lets a test wait for a count."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self._changed = asyncio.Event()

    async def __call__(self, message: bytes) -> None:
        self.messages.append(message)
        self._changed.set()

    async def wait_for(self, count: int) -> list[bytes]:
        async with asyncio.timeout(TIMEOUT):
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.messages


# -- lifecycle -------------------------------------------------------------------------


async def test_ping(bus: Bus) -> None:
    assert await bus.ping()


def test_open_bus_picks_implementation() -> None:
    assert isinstance(open_bus("memory://"), MemoryBus)
    with pytest.raises(ValueError, match="memory://"):
        open_bus("kafka://localhost")


# -- pub/sub ---------------------------------------------------------------------------


async def test_publish_reaches_subscribers_in_order(bus: Bus) -> None:
    first, second = Collector(), Collector()
    await bus.subscribe("room", first)
    await bus.subscribe("room", second)
    await bus.subscribe("elsewhere", Collector())
    sent = [str(i).encode() for i in range(50)]
    for message in sent:
        await bus.publish("room", message)
    assert await first.wait_for(50) == sent
    assert await second.wait_for(50) == sent


async def test_handlers_do_not_run_inside_publish(bus: Bus) -> None:
    calls: list[str] = []

    async def handler(message: bytes) -> None:
        calls.append("handler")

    await bus.subscribe("c", handler)
    await bus.publish("c", b"x")
    calls.append("after publish")
    collector = Collector()
    await bus.subscribe("done", collector)
    await bus.publish("done", b"")
    await collector.wait_for(1)
    await until(lambda: "handler" in calls, "the handler ran", within=TIMEOUT)
    assert calls == ["after publish", "handler"]


async def test_failing_handler_does_not_stop_delivery(bus: Bus) -> None:
    got: list[bytes] = []

    async def flaky(message: bytes) -> None:
        got.append(message)
        if message == b"boom":
            raise RuntimeError("handler bug")

    collector = Collector()
    await bus.subscribe("c", flaky)
    await bus.subscribe("c", collector)
    for message in (b"a", b"boom", b"b"):
        await bus.publish("c", message)
    await collector.wait_for(3)
    await until(lambda: len(got) == 3, "the flaky handler got all three", within=TIMEOUT)
    assert got == [b"a", b"boom", b"b"]


async def test_unsubscribe_stops_delivery(bus: Bus) -> None:
    gone, stays = Collector(), Collector()
    subscription = await bus.subscribe("c", gone)
    await bus.subscribe("c", stays)
    await bus.publish("c", b"1")
    await gone.wait_for(1)
    await subscription.unsubscribe()
    await subscription.unsubscribe()  # idempotent
    await bus.publish("c", b"2")
    await stays.wait_for(2)
    # A marker published after "2" and delivered: had "2" been queued for the removed
    # handler, its delivery task (woken with the other's) would have run by now.
    await bus.publish("c", b"marker")
    await stays.wait_for(3)
    assert gone.messages == [b"1"]


async def test_last_unsubscribe_then_resubscribe(bus: Bus) -> None:
    subscription = await bus.subscribe("c", Collector())
    await subscription.unsubscribe()
    again = Collector()
    await bus.subscribe("c", again)
    await bus.publish("c", b"x")
    assert await again.wait_for(1) == [b"x"]


@pytest.mark.redis
@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_cross_node_publish(backend: Backend) -> None:
    """Redis only (the memory bus lives in one process): two nodes on one Redis see each
    other's messages."""
    other = await backend.other_node()
    on_a, on_b = Collector(), Collector()
    await backend.bus.subscribe("fanout", on_a)
    await other.subscribe("fanout", on_b)
    await backend.bus.publish("fanout", b"from a")
    await other.publish("fanout", b"from b")
    assert sorted(await on_a.wait_for(2)) == [b"from a", b"from b"]
    assert sorted(await on_b.wait_for(2)) == [b"from a", b"from b"]

    announced = Collector()
    await other.subscribe(device_channel("d1"), announced)
    assert await backend.bus.mailbox_append("d1", {"n": 1}, ttl=30) == 1
    assert await announced.wait_for(1) == [b"1"]
    assert await other.mailbox_read("d1", 0) == [(1, {"n": 1})]
    assert await other.mailbox_append("d1", {"n": 2}, ttl=30) == 2

    await backend.bus.set_online("d1", "node-a", ttl=30)
    assert await other.online(["d1"]) == {"d1"}


# -- mailboxes -------------------------------------------------------------------------


async def test_mailbox_sequence_read_and_head(bus: Bus) -> None:
    assert await bus.mailbox_head("d1") == 0
    assert await bus.mailbox_read("d1", 0) == []
    messages: list[dict[str, Any]] = [
        {"i": i, "text": "héllo", "nested": [1, {"a": None}]} for i in range(1, 6)
    ]
    seqs = [await bus.mailbox_append("d1", m, ttl=30) for m in messages]
    assert seqs == [1, 2, 3, 4, 5]
    assert await bus.mailbox_head("d1") == 5
    assert await bus.mailbox_read("d1", 0) == list(zip(seqs, messages, strict=True))
    assert [s for s, _ in await bus.mailbox_read("d1", 2)] == [3, 4, 5]
    assert await bus.mailbox_read("d1", 5) == []
    # Devices are independent.
    assert await bus.mailbox_append("d2", {"x": 1}, ttl=30) == 1
    assert await bus.mailbox_head("d1") == 5


async def test_mailbox_stores_a_copy(bus: Bus) -> None:
    message: dict[str, Any] = {"list": [1]}
    await bus.mailbox_append("d1", message, ttl=30)
    message["list"].append(2)
    assert await bus.mailbox_read("d1", 0) == [(1, {"list": [1]})]


async def test_mailbox_ack_trims_but_keeps_numbering(bus: Bus) -> None:
    for i in range(4):
        await bus.mailbox_append("d1", {"i": i}, ttl=30)
    await bus.mailbox_ack("d1", 2)
    assert [s for s, _ in await bus.mailbox_read("d1", 0)] == [3, 4]
    await bus.mailbox_ack("d1", 4)
    assert await bus.mailbox_read("d1", 0) == []
    assert await bus.mailbox_head("d1") == 4
    assert await bus.mailbox_append("d1", {"i": 5}, ttl=30) == 5
    await bus.mailbox_ack("unknown-device", 10)  # harmless


async def test_mailbox_append_is_announced_on_device_channel(bus: Bus) -> None:
    announced, other_device = Collector(), Collector()
    await bus.subscribe(device_channel("d1"), announced)
    await bus.subscribe(device_channel("d2"), other_device)
    await bus.mailbox_append("d1", {"a": 1}, ttl=30)
    await bus.mailbox_append("d1", {"a": 2}, ttl=30)
    assert await announced.wait_for(2) == [b"1", b"2"]
    # A marker announced after both: a stray announcement to d2 would be delivered first.
    marker = Collector()
    await bus.subscribe(device_channel("d3"), marker)
    await bus.mailbox_append("d3", {"marker": True}, ttl=30)
    await marker.wait_for(1)
    assert other_device.messages == []


async def test_mailbox_concurrent_appends_get_distinct_numbers(bus: Bus) -> None:
    seqs = await asyncio.gather(*(bus.mailbox_append("d1", {"i": i}, ttl=30) for i in range(50)))
    assert sorted(seqs) == list(range(1, 51))
    assert [s for s, _ in await bus.mailbox_read("d1", 0)] == list(range(1, 51))


async def test_mailbox_messages_expire(backend: Backend) -> None:
    bus = backend.bus
    await bus.mailbox_append("d1", {"short": True}, ttl=0.3)
    await bus.mailbox_append("d1", {"long": True}, ttl=30)
    await backend.elapse(0.5)
    # The short one is gone; numbering continues while the mailbox holds anything.
    assert await bus.mailbox_read("d1", 0) == [(2, {"long": True})]
    assert await bus.mailbox_head("d1") == 2
    assert await bus.mailbox_append("d1", {"next": True}, ttl=0.3) == 3


async def test_numbering_outlives_expired_messages(backend: Backend) -> None:
    """A device connected but idle for longer than the message TTL keeps its numbering:
    the counter lives ``counter_ttl`` (default 30 days) after the last append."""
    bus = backend.bus
    await bus.mailbox_append("d1", {"a": 1}, ttl=0.3)
    await bus.mailbox_append("d1", {"a": 2}, ttl=0.3)
    await backend.elapse(0.5)
    assert await bus.mailbox_read("d1", 0) == []
    assert await bus.mailbox_head("d1") == 2
    assert await bus.mailbox_append("d1", {"a": 3}, ttl=30) == 3


async def test_numbering_restarts_after_counter_ttl(backend: Backend) -> None:
    """Documented behaviour: ``counter_ttl`` after the last append the counter is gone,
    ``mailbox_head`` is 0 and the next message is number 1 again."""
    bus = await backend.variant(counter_ttl=0.3)
    await bus.mailbox_append("d9", {"a": 1}, ttl=0.2)
    await bus.mailbox_append("d9", {"a": 2}, ttl=0.2)
    await backend.elapse(0.5)
    assert await bus.mailbox_head("d9") == 0
    assert await bus.mailbox_append("d9", {"a": 3}, ttl=30) == 1


async def test_mailbox_is_bounded_dropping_oldest(backend: Backend) -> None:
    bus = await backend.variant(mailbox_limit=3)
    for i in range(1, 6):
        assert await bus.mailbox_append("d1", {"i": i}, ttl=30) == i
    assert [s for s, _ in await bus.mailbox_read("d1", 0)] == [3, 4, 5]
    assert await bus.mailbox_head("d1") == 5


# -- presence --------------------------------------------------------------------------


async def test_presence_ttl_and_refresh(backend: Backend) -> None:
    bus = backend.bus
    assert await bus.online(["d1"]) == set()
    await bus.set_online("d1", "node-a", ttl=0.3)
    await bus.set_online("d2", "node-a", ttl=30)
    assert await bus.online(["d1", "d2", "d3"]) == {"d1", "d2"}
    await backend.elapse(0.2)
    await bus.set_online("d1", "node-a", ttl=0.3)  # heartbeat
    await backend.elapse(0.2)
    assert await bus.online(["d1", "d2"]) == {"d1", "d2"}
    await backend.elapse(0.2)
    assert await bus.online(["d1", "d2"]) == {"d2"}


async def test_set_offline_is_compare_and_delete(bus: Bus) -> None:
    await bus.set_online("d1", "node-a", ttl=30)
    await bus.set_online("d1", "node-b", ttl=30)  # the device reconnected to node B
    await bus.set_offline("d1", "node-a")  # node A's late cleanup must not clear B's
    assert await bus.online(["d1"]) == {"d1"}
    await bus.set_offline("d1", "node-b")
    assert await bus.online(["d1"]) == set()
    await bus.set_offline("d1", "node-b")  # already offline: harmless


async def test_online_for_many_devices(bus: Bus) -> None:
    ids = [f"device-{i}" for i in range(2500)]
    live = set(ids[::7])
    for device_id in live:
        await bus.set_online(device_id, "node-a", ttl=30)
    assert await bus.online(ids) == live
    assert await bus.online([]) == set()


async def test_batched_presence_and_heads_match_the_single_calls(bus: Bus) -> None:
    """What the heartbeat uses: one batch for many devices, same answers as one by one."""
    ids = [f"d{i}" for i in range(2500)]  # more than one Redis batch (1,000)
    await bus.set_online_many(ids[:2000], "node-a", ttl=30)
    assert await bus.online(ids) == set(ids[:2000])
    await bus.mailbox_append("d7", {"a": 1}, ttl=30)
    await bus.mailbox_append("d7", {"a": 2}, ttl=30)
    await bus.mailbox_append("d2400", {"a": 1}, ttl=30)
    heads = await bus.mailbox_heads(ids)
    assert heads == {d: await bus.mailbox_head(d) for d in ids}
    assert heads["d7"] == 2 and heads["d2400"] == 1 and heads["d0"] == 0
    assert await bus.mailbox_heads([]) == {}
