"""The Python SDK joins someone's call link as a guest (visavis.client.guest), against the
real `visavis serve` (a subprocess, as the README starts it):

- a bot opens its link's call; an SDK guest knocks (the bot hears ``call.guest`` waiting),
  waits in the lobby, is admitted, joins through the SFU with an ephemeral identity and
  the TURN credentials signaling gave it: both decode each other's SFrame-encrypted
  video and audio, one verification code, each lists the other as it should (the bot:
  an unverified guest; the guest: everyone unverified); a member the bot rings in joins
  and leaves, and the guest (which hears of it from the SFU only) drops his key and draws
  a fresh one; when the guest leaves, the bot draws a fresh sender key;
- a signed-in browser (Debian's Chromium) opens its link's call and admits an SDK guest
  whose name has a space: the browser's E2EE layer and the SDK guest agree keys through
  the guest channel and decode each other, one verification code, the browser shows the
  guest unverified (with a space in the name, the SFU's answers made Chromium receive
  nobody until its msid lines were fixed: tests/sfu/test_sdp_msid.py);
- a revoked link: a guest waiting in its lobby and one arriving later are both refused
  with ``link_revoked`` (410, "turned off by its owner"); an unknown link is
  ``link_not_found``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import aioice.ice
import pytest
from playwright.async_api import expect

from tests.browser import chromium
from tests.e2ee.test_group_sdk import Bot, bots_at
from tests.served import SLOW_CLIENTS, Served, serve, served_fixture
from tests.test_processes import sfu_workers
from tests.waiting import until, until_async
from tests.web.clients import open_device, sign_in, signup_rest
from visavis.client.guest import Guest, GuestError, parse_link
from visavis.client.links import admit, create_link, open_link_call, revoke_link
from visavis.client.sfu_session import PatternTrack, SfuSession, ToneTrack
from visavis.signaling import messages as m

pytestmark = [pytest.mark.interop, pytest.mark.asyncio(loop_scope="module")]
# Waits sized for a loaded 2-core machine (bounded polls, never fixed sleeps).
MEDIA_WAIT = 60.0


server = served_fixture("sdk-guest")


async def guest_event(bot: Bot, state: str) -> m.CallGuest:
    """The bot's next ``call.guest`` event in ``state`` (others skipped)."""
    while True:
        event: m.CallGuest = await bot.events.next(m.CallGuest, 30)
        if event.state == state:
            return event


def decoded(sfu: SfuSession, participant: str | None, n: int = 10) -> bool:
    counts = sfu.frames[participant or ""]
    return counts["video"] >= n and counts["audio"] >= n


async def test_sdk_guest_admitted_to_a_call_decodes_and_is_decoded_encrypted(
    server: Served, tmp_path: Path
) -> None:
    (host,) = await bots_at(server.http_url, tmp_path, ["lia"])
    link = await create_link(host.session)
    guest: Guest | None = None
    try:
        call_id = await open_link_call(host.session, link.id)
        await host.enter(call_id, 0, loud=True)
        sfu, e2ee = host.sfu, host.e2ee
        assert sfu is not None and e2ee is not None

        guest = await Guest.arrive(link.url, "Gus")
        assert guest.link.owner.handle == host.session.handle
        waiting = await guest_event(host, "waiting")
        assert waiting.guest.id == guest.id and waiting.guest.display_name == "Gus"
        lobby = await guest.lobby()
        assert lobby.state == "waiting" and lobby.room is None  # no room before admission
        await admit(host.session, call_id, guest.id)
        status = await guest.admitted(within=30)
        assert status.room is not None and status.room.call_id == call_id
        assert status.ice_servers  # TURN credentials for the guest, as a browser gets

        call = await guest.join(audio=ToneTrack(0.9, 660.0), video=PatternTrack(seed=3))
        assert call.e2ee is not None
        assert call.sfu.participant_id == f"guest:Gus/{guest.id}"
        # Both decode each other, through the SFU, every frame SFrame-encrypted.
        await sfu.wait_for(lambda: decoded(sfu, call.sfu.participant_id), MEDIA_WAIT)
        await call.sfu.wait_for(lambda: decoded(call.sfu, sfu.participant_id), MEDIA_WAIT)
        for keys in (e2ee, call.e2ee):
            stats = keys.keyring.stats
            assert stats.encrypted > 20 and stats.decrypted > 20, stats
            assert keys.alerts == [] and not keys.stopped
        # The bot sees an unverified guest; the guest got the bot's key from its announce.
        assert e2ee.guests == {guest.id: "Gus"}
        assert call.e2ee.handles == {host.session.device_id: host.session.handle}
        assert call.e2ee.guests == {}
        assert call.e2ee.verification_code == e2ee.verification_code  # one code for both
        assert host.session.device_id in call.e2ee.keys.peers  # the bot's key, installed

        # Lia rings Mat into the call; he joins, then leaves: the guest, which hears of
        # leavers only from the SFU, drops his key and draws a fresh one of its own.
        (phone,) = await bots_at(server.http_url, tmp_path, ["mat"])
        keys = call.e2ee
        try:
            await host.session.request("call.add", call_id=call_id, handles=["mat@example.com"])
            await phone.events.next(m.CallIncoming, 30)
            await phone.session.request("call.answer", call_id=call_id)
            await phone.enter(call_id, 1)
            device = phone.session.device_id
            await until(lambda: device in keys.keys.peers, "the guest has Mat's key", 60)
            guest_key = keys.keyring.current
        finally:
            await phone.close()  # leaves the SFU room and signaling
        await until(
            lambda: (
                device not in keys.keys.peers and keys.keyring.current.prefix != guest_key.prefix
            ),
            "the guest's fresh key after Mat left",
            60,
        )
        await call.sfu.wait_for(lambda: decoded(call.sfu, sfu.participant_id, 50), MEDIA_WAIT)

        # The guest leaves: the bot draws a fresh key (the guest never gets it).
        before = e2ee.keyring.current
        await guest.leave()
        await guest_event(host, "left")
        await until(
            lambda: e2ee.keyring.current.prefix != before.prefix,
            "a fresh sender key after the guest left",
            30,
        )
        assert e2ee.guests == {} and guest.id not in e2ee.keys.peers
        assert call.e2ee.keys.ended  # the guest erased its keys
    finally:
        if guest is not None:
            await guest.leave()
        await host.close()


@pytest.mark.browser
async def test_browser_member_admits_an_sdk_guest_both_decode_encrypted(server: Served) -> None:
    signup_rest(server.http_url, "ada@example.com", "Ada")
    guest: Guest | None = None
    async with chromium() as browser:
        ada = await open_device(browser, server.http_url, max_height=360)
        try:
            await sign_in(ada, "ada@example.com", "Ada's laptop")
            await ada.page.get_by_role("button", name="Make a call link").click()
            link = await ada.page.get_by_role("textbox", name="Call link").input_value()

            guest = await Guest.arrive(link, "Notes bot")
            notice = ada.page.locator(".lobby-notice")
            await expect(notice).to_contain_text("Notes bot is waiting on your call link")
            await notice.get_by_role("button", name="Open the call").click()
            await ada.wait_phase("in_call", within=MEDIA_WAIT)
            await ada.page.get_by_role("button", name="Admit Notes bot").click()
            await guest.admitted(within=30)
            call = await guest.join(audio=ToneTrack(0.9), video=PatternTrack(seed=5))
            assert call.e2ee is not None
            ada_pid = await ada.page.evaluate("window.visavis.controller.participantId")

            async def ada_decodes() -> bool:
                got = await ada.page.evaluate("window.visavis.controller.received()")
                return bool(got.get(call.sfu.participant_id, {}).get("video", 0) >= 10)

            try:
                await until_async(ada_decodes, "the browser decodes the SDK guest", MEDIA_WAIT)
            except AssertionError as failed:
                seen = await ada.page.evaluate("window.visavis.e2ee.stats()")
                raise AssertionError(f"{failed}; browser's keys: {seen}") from None
            await call.sfu.wait_for(lambda: call.sfu.frames[ada_pid]["video"] >= 10, MEDIA_WAIT)
            stats = await ada.page.evaluate("window.visavis.e2ee.stats()")
            assert stats["frames"]["decrypted"] > 20 and stats["frames"]["encrypted"] > 20
            assert stats["alerts"] == [] and stats["refused"] == {}, stats
            assert call.e2ee.keyring.stats.decrypted > 20 and call.e2ee.alerts == []
            assert stats["code"] == call.e2ee.verification_code
            await expect(ada.page.locator(".unverified")).to_contain_text(
                "Unverified guest: Notes bot"
            )
            await guest.leave()
            assert ada.errors == []
        finally:
            if guest is not None:
                await guest.leave()
            await ada.close()


async def test_a_revoked_link_refuses_the_sdk_guest_with_a_clear_error(
    server: Served, tmp_path: Path
) -> None:
    (host,) = await bots_at(server.http_url, tmp_path, ["max"])
    link = await create_link(host.session)
    early = await Guest.arrive(link.url, "Early")  # in the lobby (the owner is told)
    try:
        assert (await guest_event(host, "waiting")).guest.id == early.id
        await revoke_link(host.session, link.id)
        with pytest.raises(GuestError) as waited:
            await early.admitted(within=30)
        assert (waited.value.code, waited.value.status) == ("link_revoked", 410)
        assert waited.value.message == "this call link was turned off by its owner"

        with pytest.raises(GuestError) as late:
            await Guest.arrive(link.url, "Late")
        assert (late.value.code, late.value.status) == ("link_revoked", 410)
        assert str(late.value) == "link_revoked: this call link was turned off by its owner"

        server_url, _ = parse_link(link.url)
        with pytest.raises(GuestError) as unknown:
            await Guest.arrive(f"{server_url}/#join=no-such-link", "Lost")
        assert (unknown.value.code, unknown.value.status) == ("link_not_found", 404)
        with pytest.raises(ValueError, match="not a call link"):
            parse_link(server_url)
    finally:
        await early.leave()
        await host.close()


async def test_sdk_guest_rejoins_when_its_sfu_worker_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two SFU workers; the worker holding a link's call is SIGKILLed: the signed-in bot
    follows ``call.room_moved`` (``SfuSession.follow``), the guest, which signaling does
    not tell, rejoins through its lobby's fresh token; both decode each other again,
    still end-to-end encrypted."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda *a, **k: ["127.0.0.1"])
    env = {
        "VISAVIS_SFU__WORKERS": "2",
        "VISAVIS_SFU__ALLOWED_NETWORKS": '["127.0.0.0/8"]',
        **SLOW_CLIENTS,
    }
    with serve(tmp_path / "data", env=env, timeout=120) as server:
        urls = [u for u in server.endpoints["sfu"] if u.startswith("ws://")]
        (host,) = await bots_at(server.http_url, tmp_path, ["zoe"])
        link = await create_link(host.session)
        guest: Guest | None = None
        try:
            call_id = await open_link_call(host.session, link.id)
            await host.enter(call_id, 0, loud=True)
            sfu = host.sfu
            assert sfu is not None
            sfu.follow(host.session, call_id)
            guest = await Guest.arrive(link.url, "Gus")
            await guest_event(host, "waiting")
            await admit(host.session, call_id, guest.id)
            await guest.admitted(within=30)
            call = await guest.join(audio=ToneTrack(0.9, 660.0), video=PatternTrack(seed=3))
            await call.sfu.wait_for(lambda: decoded(call.sfu, sfu.participant_id), MEDIA_WAIT)
            await sfu.wait_for(lambda: decoded(sfu, call.sfu.participant_id), MEDIA_WAIT)
            assert call.sfu.url == sfu.url

            worker = f"visavis-sfu-{urls.index(call.sfu.url)}"
            os.kill(sfu_workers(server.pid)[worker], signal.SIGKILL)
            killed = time.monotonic()
            await until(lambda: call.rejoins == 1 and sfu.moves == 1, "both rejoin", 60)
            assert call.sfu.url == sfu.url != urls[int(worker[-1])]  # on the live worker
            seen = {pid: n["video"] for pid, n in call.sfu.frames.items()}
            host_seen = sfu.frames[call.sfu.participant_id or ""]["video"]
            await call.sfu.wait_for(
                lambda: (
                    call.sfu.frames[sfu.participant_id or ""]["video"]
                    >= seen.get(sfu.participant_id or "", 0) + 10
                ),
                MEDIA_WAIT,
            )
            await sfu.wait_for(
                lambda: sfu.frames[call.sfu.participant_id or ""]["video"] >= host_seen + 10,
                MEDIA_WAIT,
            )
            took = time.monotonic() - killed
            print(f"GUEST_REJOIN worker killed -> both decode again: {took:.1f} s")
            assert call.e2ee is not None and call.e2ee.alerts == []
            assert call.e2ee.keyring.stats.decrypted > 20
        finally:
            if guest is not None:
                await guest.leave()
            await host.close()
