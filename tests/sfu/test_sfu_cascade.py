"""A room cascaded over two SFU servers (in one process, no registry): aiortc participants
on each node decode each other, hear the dominant speaker of the other node, and links
from unknown or forged nodes are refused and counted."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from websockets.asyncio.client import connect

from tests.sfu.conftest import SECRET, make_settings
from tests.waiting import until, until_async
from visavis.client.sfu_session import PatternTrack, SfuSession, ToneTrack
from visavis.config import Settings
from visavis.fleet.record import NodeRecord
from visavis.sfu.cascade import Cascade, sign_hello
from visavis.sfu.server import SfuServer
from visavis.tokens import sign_token

pytestmark = pytest.mark.interop


def record(server: SfuServer) -> NodeRecord:
    return NodeRecord(
        node_id=server.settings.node_id,
        kind="sfu",
        boot="b",
        ts=time.time(),
        control_url=server.control_url,
        media=tuple(server.endpoints()[1:]),
    )


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path) -> AsyncIterator[tuple[SfuServer, SfuServer]]:
    """Nodes A and B, each knowing the other's record (as the registry would say)."""
    servers: list[SfuServer] = []
    for name in ("A", "B"):
        base = make_settings(tmp_path / name)
        settings = Settings(
            data_dir=tmp_path / name,
            shared_secret=SecretStr(SECRET),
            node_id=name,
            sfu=base.sfu,
        )
        server = SfuServer(settings)
        await server.start()
        servers.append(server)
    records = {s.settings.node_id: s for s in servers}

    async def lookup(node: str) -> NodeRecord | None:
        found = records.get(node)
        return None if found is None else record(found)

    for server in servers:
        server.cascade = Cascade(
            node_id=server.settings.node_id,
            secret=SECRET,
            identity=server.identity,
            stats=server.stats,
            endpoint=server.endpoint,
            rooms=lambda s=server: s.rooms,  # type: ignore[misc]
            lookup=lookup,
            refused=lambda reason, s=server: s.cascade_refused.labels(reason).inc(),  # type: ignore[misc]
        )
    try:
        yield servers[0], servers[1]
    finally:
        for server in servers:
            await server.close()


def token(user: str, node: str, peers: list[str]) -> str:
    claims = {"room": "r1", "call": "c1", "user": user, "device": "d1", "node": node}
    claims["peers"] = peers  # type: ignore[assignment]
    return sign_token(SECRET, claims, now=time.time(), ttl=60)


def frames_from(session: SfuSession, others: list[SfuSession], minimum: int = 5) -> bool:
    return all(
        session.frames[o.participant_id or ""]["audio"] >= minimum
        and session.frames[o.participant_id or ""]["video"] >= minimum
        for o in others
    )


async def test_room_cascaded_over_two_nodes(tmp_path: Path) -> None:
    async with two_nodes(tmp_path) as (a, b):
        people = [("alice", a, []), ("bob", a, []), ("carol", b, ["A"]), ("dave", b, ["A"])]
        group: list[SfuSession] = []
        try:
            for index, (name, node, peers) in enumerate(people):
                s = SfuSession(
                    node.control_url,
                    token(name, node.settings.node_id, peers),
                    audio=ToneTrack(amplitude=0.9 if name == "carol" else 0.0),
                    video=PatternTrack(seed=index),
                )
                group.append(s)
                await s.join()
            for s in group:
                others = [o for o in group if o is not s]
                await s.wait_for(lambda s=s, others=others: frames_from(s, others), 30)
            # Carol (on B) is loud: everyone, on both nodes, hears she is dominant.
            carol = group[2].participant_id
            for s in group:
                await s.wait_for(lambda s=s: s.dominant_speaker == carol, 10)
            # One link between the nodes carries the room; each producer crosses it once.
            assert set(a.cascade.links) == {"B"} and set(b.cascade.links) == {"A"}  # type: ignore[union-attr]
            assert len(a.cascade.links["B"].consumers) == 4  # type: ignore[union-attr]
            assert a.rooms["r1"].local() == 2 and len(a.rooms["r1"].participants) == 4
            # Bob leaves (on A): the participants on B are told and his media stops.
            await group[1].close()
            for s in group[2:]:
                await s.wait_for(
                    lambda s=s: any(
                        e["type"] == "participant_left"
                        and e["participant_id"] == group[1].participant_id
                        for e in s.events
                    ),
                    5,
                )
            assert len(a.cascade.links["B"].consumers) == 2  # type: ignore[union-attr]
        finally:
            for s in group:
                await s.close()


async def test_a_lost_link_between_live_nodes_comes_back(tmp_path: Path) -> None:
    """The link's control connection drops while both nodes live (a network blip, a
    proxy restart): the dialing node dials again, the room's media crosses again, and
    each side sees the other's participant again."""
    async with two_nodes(tmp_path) as (a, b):
        alice = SfuSession(a.control_url, token("alice", "A", []), video=PatternTrack(seed=1))
        carol = SfuSession(
            b.control_url, token("carol", "B", ["A"]), video=PatternTrack(seed=2)
        )
        try:
            await alice.join()
            await carol.join()  # B dials A (carol's token names A)
            pair = (alice, carol)
            await until(lambda: all(frames_video(s, o) for s, o in (pair, pair[::-1])),
                        "media across the link", 30)
            assert a.cascade is not None and b.cascade is not None
            first = a.cascade.links["B"]
            await first.ws.close()  # cut the link under both nodes
            cut = time.monotonic()
            await until(lambda: "B" not in a.cascade.links or a.cascade.links["B"] is not first,  # type: ignore[union-attr]
                        "the cut seen", 10)

            def relinked() -> bool:
                link = a.cascade.links.get("B")  # type: ignore[union-attr]
                return link is not None and link is not first

            await until(relinked, "the link back", 20)
            back = time.monotonic()

            def flowing_again() -> bool:  # frames decoded since the new link, both ways
                return (
                    alice.last_frame[carol.participant_id or ""].get("video", 0.0) > back
                    and carol.last_frame[alice.participant_id or ""].get("video", 0.0) > back
                )

            await until(flowing_again, "media across the new link", 20)
            print(f"link back after {back - cut:.2f} s, media after {time.monotonic() - cut:.2f} s")
            assert b.cascade.links_opened == 2
        finally:
            await alice.close()
            await carol.close()


def frames_video(session: SfuSession, other: SfuSession, minimum: int = 5) -> bool:
    return session.frames[other.participant_id or ""]["video"] >= minimum


@pytest.mark.parametrize("case", ["unknown_node", "forged", "wrong_node", "replayed"])
async def test_link_from_unknown_node_refused(tmp_path: Path, case: str) -> None:
    async with two_nodes(tmp_path) as (a, _):
        now = time.time()
        hello = {
            "unknown_node": sign_hello(SECRET, "Z", "A", "n1", now=now),
            "forged": sign_hello("another-secret", "B", "A", "n2", now=now),
            "wrong_node": sign_hello(SECRET, "B", "C", "n3", now=now),
            "replayed": sign_hello(SECRET, "B", "A", "n4", now=now),
        }[case]
        if case == "replayed":  # the first use opens a link; the copy is refused
            async with connect(a.control_url) as ws:
                await ws.send(json.dumps({"type": "cascade", "token": hello}))
                assert json.loads(await ws.recv())["type"] == "cascade_ok"
        async with connect(a.control_url) as ws:
            await ws.send(json.dumps({"type": "cascade", "token": hello}))
            reply = json.loads(await ws.recv())
        assert reply["type"] == "error" and reply["code"] == "unauthorized"
        value = a.registry.get_sample_value("visavis_sfu_cascade_refused_total", {"reason": case})
        assert value == 1
        await until(lambda: "B" not in a.cascade.links, "the replayed link to close", 5)  # type: ignore[union-attr]


@pytest.mark.browser
async def test_simulcast_layers_cross_the_link(tmp_path: Path) -> None:
    """Chromium publishes three simulcast layers on node A; an aiortc subscriber on node B
    is switched between them by its own bandwidth, on B, as if Chromium were local."""
    from tests.sfu.test_sfu_chromium import ARGS, CHROMIUM, HAVE_CHROMIUM, page_server

    playwright_api = pytest.importorskip("playwright.async_api")
    if not HAVE_CHROMIUM:
        pytest.skip("Debian chromium is not installed")
    async with two_nodes(tmp_path) as (a, b), playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        alice = SfuSession(
            b.control_url, token("alice", "B", ["A"]), audio=ToneTrack(0.3), video=PatternTrack()
        )
        try:
            await alice.join()
            with page_server() as url:
                page = await browser.new_page()
                await page.goto(url)
                await page.evaluate(
                    "([u, t]) => run(u, t)", [a.control_url, token("chrome", "A", [])]
                )
                chrome_id = await until_async(
                    lambda: page.evaluate("window.state.participant_id"),
                    "Chromium to join",
                    20,
                    every=0.25,
                )
                await alice.wait_for(lambda: alice.frames[chrome_id]["video"] >= 10, 30)

                async def chrome_decodes_alice() -> bool:
                    got = await page.evaluate("received()")
                    return bool(got.get(alice.participant_id, {}).get("video", 0) >= 10)

                await until_async(
                    chrome_decodes_alice, "Chromium (on A) to decode alice (on B)", 30, every=0.25
                )
                # On B, Chromium is a remote participant whose three layers come over the link.
                room = b.rooms["r1"]
                remote = room.participants[chrome_id]
                assert remote.remote
                video = next(p for p in remote.producers.values() if p.is_video)
                assert len(video.layers) == 3

                async def layers_active() -> bool:
                    return all(layer.received > 0 for layer in video.layers)

                await until_async(
                    layers_active, "all three layers to cross the link", 20, every=0.25
                )
                me = room.participants[alice.participant_id or ""]
                consumer = next(c for c in me.consumers.values() if c.producer is video)

                async def on_layer(layer: int) -> bool:
                    me.bwe.on_remb(budget, time.monotonic())
                    return consumer.selector.current == layer

                for budget in (120_000, 20_000_000):
                    target = 0 if budget < 1_000_000 else 2
                    await until_async(
                        lambda t=target: on_layer(t), f"a switch to layer {target}", 20, every=0.25
                    )
                    frames = alice.frames[chrome_id]["video"]
                    await alice.wait_for(
                        lambda n=frames: alice.frames[chrome_id]["video"] >= n + 10, 10
                    )
                assert not (await page.evaluate("window.state.errors"))
        finally:
            await browser.close()
            await alice.close()
