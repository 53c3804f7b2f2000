"""1:1 calls between browsers through the real `visavis serve`: ring on every device of
the callee, answer on one (the other stops), media both ways, end; decline; cancel;
timeout → missed call in history. Each browser context is its own device; the three
devices stay signed in for the whole module and every test leaves them at home."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, expect

from tests.served import Served
from tests.web.clients import (
    Device,
    axe_violations,
    open_device,
    sign_in,
    sign_up,
    signup_rest,
)

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="package")]

ALICE = "alice@example.com"
BOB = "bob@example.com"


@pytest_asyncio.fixture(scope="module", loop_scope="package")
async def people(server: Served, browser: Browser) -> AsyncIterator[tuple[Device, Device, Device]]:
    """Alice (signed up through the form) and Bob on two devices."""
    signup_rest(server.http_url, BOB, "Bob")
    alice = await open_device(browser, server.http_url)
    bob1 = await open_device(browser, server.http_url)
    bob2 = await open_device(browser, server.http_url)
    await sign_up(alice, ALICE, "Alice", "alice laptop")
    await sign_in(bob1, BOB, "bob laptop")
    await sign_in(bob2, BOB, "bob phone")
    yield alice, bob1, bob2
    for device in (alice, bob1, bob2):
        assert device.errors == [], device.errors
        await device.close()


async def ring_view(device: Device) -> None:
    await expect(device.page.get_by_role("alertdialog")).to_be_visible()
    await expect(device.page.get_by_role("heading", name="Alice")).to_be_visible()


async def at_home(*devices: Device) -> None:
    for device in devices:
        await expect(device.page.get_by_role("heading", name="Call someone")).to_be_visible()
        await device.wait_phase("idle")


async def test_call_rings_both_devices_answer_one_media_both_ways(
    people: tuple[Device, Device, Device],
) -> None:
    alice, bob1, bob2 = people
    await alice.find_and_call(BOB)
    await expect(alice.page.get_by_role("status").filter(has_text="Ringing")).to_be_visible()
    await ring_view(bob1)
    await ring_view(bob2)

    await bob1.page.get_by_role("button", name="Video", exact=True).click()
    # The other device stops ringing and says why, then returns home.
    await expect(bob2.page.locator("#ring-status")).to_have_text("Answered on another device")
    await at_home(bob2)

    await alice.wait_phase("in_call")
    await bob1.wait_phase("in_call")
    # Media both ways: inbound video frames decoded grow on both sides.
    a1 = await alice.wait_frames(10)
    b1 = await bob1.wait_frames(10)
    await alice.wait_frames(a1 + 15)
    await bob1.wait_frames(b1 + 15)
    # The connection-quality indicator reads getStats.
    await expect(alice.page.locator(".quality")).to_contain_text("connection")

    # ICE restart (what a network change triggers): a visible "reconnecting" state, a
    # fresh peer connection on both sides, and media flowing again.
    old_pc = await alice.page.evaluate_handle("window.visavis.controller.pc")
    await bob1.page.evaluate("window.visavis.phases = []; window.visavis.controller.restart()")
    await alice.page.wait_for_function("pc => window.visavis.controller.pc !== pc", arg=old_pc)
    await bob1.wait_phase("in_call")
    await alice.wait_phase("in_call")
    assert "reconnecting" in await bob1.page.evaluate("window.visavis.phases")
    await alice.wait_frames(10)
    await bob1.wait_frames(10)
    # The reconnecting view passes axe. It lasts a fraction of a second on loopback, so
    # this holds it by the state machine's own event (what ICE "disconnected" sends) and
    # lets it go with "connected".
    call_id = await bob1.page.evaluate("window.visavis.store.get().call.callId")
    await bob1.page.evaluate(
        "(id) => window.visavis.dispatch({type: 'media_lost', callId: id})", call_id
    )
    await expect(bob1.page.locator(".call-status")).to_have_text("Reconnecting…")
    assert await axe_violations(bob1.page) == []
    await bob1.page.evaluate(
        "(id) => window.visavis.dispatch({type: 'connected', callId: id})", call_id
    )
    await bob1.wait_phase("in_call")

    # Screen sharing goes out on the call's screen slot (its own tile at Bob's, see
    # test_screen_share.py); Bob keeps decoding.
    await alice.page.get_by_role("button", name="Share screen").click()
    sharing = (
        "window.visavis.controller.pc.getSenders().some((s) => s.track?.label.startsWith('screen'))"
    )
    await alice.page.wait_for_function(f"() => {sharing}")
    frames = await bob1.frames_decoded()
    await bob1.wait_frames(frames + 10)
    await alice.page.get_by_role("button", name="Stop sharing").click()
    await alice.page.wait_for_function(f"() => !({sharing})")

    # Mute and camera off act on the local tracks.
    await alice.page.get_by_role("button", name="Mute").click()
    assert await alice.page.evaluate("!window.visavis.media.audio.enabled")
    await alice.page.get_by_role("button", name="Camera off").click()
    assert await alice.page.evaluate("!window.visavis.media.video.enabled")

    await alice.page.get_by_role("button", name="End").click()
    await expect(bob1.page.locator(".call-status")).to_have_text("Call ended")
    await at_home(alice, bob1)

    await alice.go_home_tab("History")
    entry = alice.page.locator(".history li").first
    await expect(entry).to_have_attribute("data-state", "answered")
    await expect(entry).to_have_attribute("data-direction", "outgoing")
    await alice.go_home_tab("Contacts")


async def test_decline_stops_every_device_and_tells_the_caller(
    people: tuple[Device, Device, Device],
) -> None:
    alice, bob1, bob2 = people
    await alice.find_and_call(BOB, media="audio")
    await ring_view(bob1)
    await ring_view(bob2)
    await expect(bob1.page.locator("#ring-status")).to_have_text("Audio call")
    await bob2.page.get_by_role("button", name="Decline").click()
    await expect(alice.page.locator(".call-status")).to_have_text("Declined")
    await expect(bob1.page.locator("#ring-status")).to_have_text("Declined on another device")
    await at_home(alice, bob1, bob2)


async def test_cancel_withdraws_the_ring(people: tuple[Device, Device, Device]) -> None:
    alice, bob1, bob2 = people
    await alice.find_and_call(BOB)
    await ring_view(bob1)
    await ring_view(bob2)
    await alice.page.get_by_role("button", name="Cancel").click()
    for device in (bob1, bob2):
        await expect(device.page.locator("#ring-status")).to_have_text("Call cancelled")
    await at_home(alice, bob1, bob2)


async def test_timeout_is_a_missed_call_in_history(people: tuple[Device, Device, Device]) -> None:
    alice, bob1, bob2 = people
    await alice.find_and_call(BOB)
    await ring_view(bob1)
    # Nobody answers: the server's ring timeout (12 s here) ends it everywhere.
    await expect(alice.page.locator(".call-status")).to_have_text("No answer", timeout=30_000)
    for device in (bob1, bob2):
        await expect(device.page.locator("#ring-status")).to_have_text("Missed call")
    await at_home(alice, bob1, bob2)
    # Bob's history marks it missed, with an unseen count until he looks.
    badge = bob2.page.locator(".badge")
    # Two unseen: this one and the cancelled call (a caller who gave up shows as missed).
    await expect(badge).to_have_text("2")
    await bob2.go_home_tab("History")
    entry = bob2.page.locator(".history li").first
    await expect(entry).to_have_attribute("data-state", "missed")
    await expect(entry).to_have_class("missed")
    await expect(badge).to_have_count(0)
    await bob2.go_home_tab("Contacts")


async def test_handoff_moves_the_call_to_another_device(
    people: tuple[Device, Device, Device],
) -> None:
    alice, bob1, bob2 = people
    await alice.go_home_tab("History")
    calls_before = await alice.page.locator(".history li").count()
    await alice.go_home_tab("Contacts")
    await alice.find_and_call(BOB)
    await ring_view(bob1)
    await bob1.page.get_by_role("button", name="Video", exact=True).click()
    await alice.wait_phase("in_call")
    await alice.wait_frames(5)

    # Bob's other device offers to take the call (it polls history every 10 s).
    move = bob2.page.get_by_role("button", name="Move call here")
    await expect(move).to_be_visible(timeout=30_000)
    assert await axe_violations(bob2.page) == []  # the "Move call here" banner
    old_pc = await alice.page.evaluate_handle("window.visavis.controller.pc")
    await move.click()
    await expect(bob1.page.locator(".call-status")).to_have_text("Moved to another device")
    await bob2.wait_phase("in_call")
    await alice.page.wait_for_function("pc => window.visavis.controller.pc !== pc", arg=old_pc)
    await alice.wait_phase("in_call")
    # Media continues, now between Alice and Bob's second device.
    await alice.wait_frames(10)
    await bob2.wait_frames(10)

    await bob2.page.get_by_role("button", name="End").click()
    await at_home(alice, bob1, bob2)
    await alice.go_home_tab("History")
    await expect(alice.page.locator(".history li")).to_have_count(calls_before + 1)
    await expect(alice.page.locator(".history li").first).to_have_attribute(
        "data-state", "answered"
    )
    await alice.go_home_tab("Contacts")
