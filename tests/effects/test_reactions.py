"""Reactions (effects/reactions.js, reaction-animations.js) between two browsers joined by a
real peer connection: a reaction sent by one (menu call or Alt+digit shortcut) plays on the
sender's tile on both sides; the bytes on the wire are AES-GCM sealed (no reaction name, no
JSON in them); the sender is rate limited; a forged, re-attributed, replayed or oversized
message is dropped and counted; the SDP that signaling would carry says nothing about them."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest

from tests.effects import harness

pytestmark = pytest.mark.browser

KINDS = [
    "hearts", "thumbs_up", "thumbs_down", "balloons",
    "confetti", "fireworks", "rain", "lasers",
]  # fmt: skip


async def test_reactions_between_two_browsers(playwright: Any, web_origin: str, csp: str) -> None:
    browser = await harness.launch(playwright)
    try:
        secret = secrets.token_hex(32)
        pages = []
        for _ in range(2):
            context = await browser.new_context()
            pages.append(await harness.open_harness(context, web_origin, "reactions.html", csp))
        alice, bob = pages
        await alice.evaluate("([s, p, k]) => setup(s, p, k)", ["alice", "bob", secret])
        await bob.evaluate("([s, p, k]) => setup(s, p, k)", ["bob", "alice", secret])
        offer = await alice.evaluate("offer()")
        answer = await bob.evaluate("o => answer(o)", offer)
        await alice.evaluate("a => accept(a)", answer)
        await alice.evaluate("channelOpen()")
        await bob.evaluate("channelOpen()")
        signaled = json.dumps([offer, answer])

        # Every kind, from the API: bob sees each on alice's tile, alice on her own.
        for kind in KINDS:
            assert await alice.evaluate(f"react('{kind}')") is True
            # seen: the overlay on alice's tile plays this kind and has drawn something
            await bob.evaluate(
                f"waitFor(() => tileReaction('alice').kind === '{kind}'"
                " && tileReaction('alice').painted > 0)"
            )
            assert (await alice.evaluate("tileReaction('alice')"))["kind"] == kind
            assert (await bob.evaluate("tileReaction('bob')"))["kind"] is None
            # one reaction per 1.5 s is always allowed: move both limiters' clocks on
            await alice.evaluate("advance(1500)")
            await bob.evaluate("advance(1500)")
        assert [k for who, k in await bob.evaluate("played()") if who == "alice"] == KINDS

        # The shortcut: Alt+1 is hearts, from bob this time; a burst is rate limited.
        before = await bob.evaluate("stats()")
        for _ in range(8):
            await bob.keyboard.press("Alt+Digit1")
        after = await bob.evaluate("stats()")
        sent = after["sent"] - before["sent"]
        assert 1 <= sent <= 3 and after["limited"] - before["limited"] == 8 - sent
        from_bob = "played().filter(([who]) => who === 'bob').length"
        await alice.evaluate(f"waitFor(() => {from_bob} === {sent})")
        played = await alice.evaluate("played()")
        assert [kind for who, kind in played if who == "bob"] == ["hearts"] * sent

        # What travelled: sealed bytes, never the name or the JSON, in neither direction.
        payloads = await alice.evaluate("wire()") + await bob.evaluate("wire()")
        assert len(payloads) == len(KINDS) + sent
        for payload in payloads:
            raw = bytes.fromhex(payload)
            assert raw[0] == 0x56 and raw[1] == 0  # sealed, key generation 0
            assert len(raw) >= 2 + 12 + 16 + len('{"v":1,"kind":"rain","id":""}') + 16
            for kind in KINDS:
                assert kind.encode() not in raw
            assert b'"kind"' not in raw and b'{"v"' not in raw
        for kind in KINDS:
            assert kind not in signaled

        # Forged, re-attributed, replayed, oversized: dropped and counted.
        genuine = payloads[0]  # alice's hearts, sealed with her id bound in
        await bob.evaluate(f"inject('{genuine}', 'alice')")  # replay
        await bob.evaluate(f"inject('{genuine[:-2]}{(int(genuine[-2:], 16) ^ 1):02x}', 'alice')")
        await bob.evaluate(f"inject('{payloads[1]}', 'mallory')")  # re-attributed
        await bob.evaluate(f"inject('{'56' + '00' * 300}', 'alice')")
        plain = "76" + json.dumps({"v": 1, "kind": "hearts", "id": "0" * 16}).encode().hex()
        await bob.evaluate(f"inject('{plain}', 'alice')")  # unsealed in a sealed call
        dropped = (await bob.evaluate("stats()"))["dropped"]
        assert dropped["duplicate"] == 1
        assert dropped["decrypt"] == 2
        assert dropped["size"] == 1
        assert dropped["unsealed"] == 1

        # Group calls: per-sender keys (SFrame sender keys), rekeyed when someone leaves.
        check = await alice.evaluate("senderKeyCheck()")
        assert check["opened"] == '{"v":1,"kind":"rain","id":"0123456789abcdef"}'
        assert check["asBob"] == "refused: key"  # bob's key has another generation
        assert check["unknown"] == "refused: key"
        assert check["afterRekey"] == "refused: key"
        assert check["newKey"] == check["opened"]
        assert alice.harness_errors == [] and bob.harness_errors == []
    finally:
        await browser.close()
