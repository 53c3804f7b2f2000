"""Browser failover: three Chromium pages in a group call on a fleet of real processes
(2 signaling nodes, 3 SFU nodes, PostgreSQL, Redis).

1. The room's SFU node is killed with SIGKILL: the pages notice at once (their control
   WebSocket closes) and report it (``call.media_lost``); the reports move the room;
   every page joins the new node on ``call.room_moved`` and decodes both others again
   there (within 10 s on a loaded machine: see RECOVERY_LIMIT), back "in call", with no
   ring and no hang-up.
2. The new node hangs (SIGSTOP: its sockets stay open, nothing arrives): the pages see
   nothing arrive for 4 s (getStats), report it, and the room moves again.

The registry TTL is 30 s here, so only the pages' reports can have moved the room.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.browser import chromium
from tests.fleet.browsers import group_call, kill_room_node, reports_acted, state
from tests.fleet.cluster import fleet
from tests.served import SLOW_CLIENTS
from tests.services import fresh_postgres, fresh_redis_prefix

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser]

# Seconds from the kill to every page decoding both others again. The goal is 5 s
# (benchmarks/fleet_failover_browser.py measures p50/p99, docs/fleet.md); three Chromium
# encoders and five servers on two shared cores at load 20-35 took 2.5-7.4 s here, so
# the test allows 10 s: it proves the pages recover by themselves, the benchmark says
# how fast.
RECOVERY_LIMIT = 10.0
STALL_LIMIT = 4.0 + RECOVERY_LIMIT  # a hung node: the pages' 4 s stall, then as a kill


async def test_browsers_follow_their_room_when_its_node_dies_or_hangs(tmp_path: Path) -> None:
    slow_ttl = {"VISAVIS_FLEET__TTL": "30", **SLOW_CLIENTS}
    env = {name: dict(slow_ttl) for name in ("sfu-a", "sfu-b", "sfu-c", "sig-0", "sig-1")}
    async with fresh_postgres() as db, fresh_redis_prefix() as prefix:
        with fleet(tmp_path, db, prefix, signaling=2, sfu=3, node_env=env) as f:
            async with chromium() as browser, group_call(f, browser) as devices:
                before = [await state(d) for d in devices]
                killed = await kill_room_node(f, devices, moves=1)
                print(f"SIGKILL: moved after {killed.moved}, decoding after {killed.decoding}")
                after = [await state(d) for d in devices]
                assert len({s["url"] for s in after}) == 1
                assert f.node_of(after[0]["url"]) != killed.node
                # The same participants (user/device) on the new node; the call went on.
                assert [s["id"] for s in after] == [s["id"] for s in before]
                for device in devices:
                    await device.wait_phase("in_call", within=15)
                    assert not device.errors, device.errors
                    # No ring, no "call ended".
                    assert not await device.page.get_by_role("alertdialog").count()
                assert killed.recovery < RECOVERY_LIMIT, killed
                assert await reports_acted(f) == 1  # the pages' reports moved it

                hung = await kill_room_node(f, devices, moves=2, how=signal.SIGSTOP)
                print(f"SIGSTOP: moved after {hung.moved}, decoding after {hung.decoding}")
                try:
                    last = {f.node_of((await state(d))["url"]) for d in devices}
                    assert last.isdisjoint({killed.node, hung.node}), last
                    assert hung.recovery < STALL_LIMIT, hung
                    assert min(hung.moved) > 3.0, hung  # by the stall, not by anything else
                    assert await reports_acted(f) == 2
                    for device in devices:
                        await device.wait_phase("in_call", within=15)
                        assert not device.errors, device.errors
                finally:
                    f.sfu[hung.node].process.kill()  # a stopped process takes no SIGTERM
