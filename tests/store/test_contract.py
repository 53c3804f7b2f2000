"""The Store contract, run against every implementation (see conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from visavis.store import HandleTaken, open_store
from visavis.store.base import Call, CallLink, Guest, Participant, ParticipantState, Store
from visavis.store.sql import SqlStore
from visavis.store.sqlite import SqliteStore

from .conftest import StoreFactory


async def _users(store: Store, *ids: str) -> None:
    for i in ids:
        await store.create_user(
            user_id=i, handle=f"h-{i}", display_name=i.upper(), password_hash="x", now=1.0
        )


def _call(call_id: str, initiator: str = "alice", *, created_at: float = 10.0) -> Call:
    return Call(
        id=call_id,
        initiator_user_id=initiator,
        initiator_device_id=f"{initiator}-phone",
        media="video",
        state="ringing",
        topology="p2p",
        created_at=created_at,
    )


def _p(
    call_id: str,
    user_id: str,
    state: ParticipantState = "ringing",
    *,
    role: str = "callee",
    at: float = 10.0,
    deadline: float | None = 40.0,
) -> Participant:
    return Participant(
        call_id=call_id,
        user_id=user_id,
        role="caller" if role == "caller" else "callee",
        state=state,
        invited_at=at,
        invited_by="alice",
        ring_deadline=deadline,
    )


async def _two_party(store: Store, call_id: str = "c1", *, created_at: float = 10.0) -> None:
    await store.create_call(
        _call(call_id, created_at=created_at),
        [
            _p(call_id, "alice", "joined", role="caller", at=created_at, deadline=None),
            _p(call_id, "bob", at=created_at, deadline=created_at + 30),
        ],
    )


# -- lifecycle -----------------------------------------------------------------------


async def test_ping(store: Store) -> None:
    assert await store.ping()


async def test_open_store_rejects_unsupported_urls() -> None:
    with pytest.raises(ValueError, match="sqlite\\+aiosqlite"):
        open_store("sqlite:///x.db")
    with pytest.raises(ValueError, match="unsupported"):
        open_store("mysql://localhost/x")
    assert isinstance(open_store("sqlite+aiosqlite:///x.db"), SqliteStore)
    assert isinstance(open_store("postgresql+asyncpg://u@h/db"), SqlStore)


async def test_state_survives_restart_and_migrations_are_idempotent(
    store_factory: StoreFactory,
) -> None:
    first = await store_factory.open()
    await _users(first, "alice", "bob")
    await first.create_device(
        device_id="d1", user_id="alice", name="phone", kind="phone", token_hash="t1", now=2.0
    )
    await _two_party(first)
    assert await first.update_participant("c1", "bob", only_if_state={"ringing"}, state="joined")
    await first.close()

    second = await store_factory.open()  # runs the migrations again on the same database
    assert (await second.get_user_by_handle("H-ALICE")) is not None
    device = await second.get_device_by_token_hash("t1")
    assert device is not None and device.user_id == "alice"
    assert [p.state for p in await second.get_participants("c1")] == ["joined", "joined"]
    third = await store_factory.open()  # and a second node alongside it
    assert await third.get_call("c1") == await second.get_call("c1")


# -- users ---------------------------------------------------------------------------


async def test_users_and_case_insensitive_handles(store: Store) -> None:
    user = await store.create_user(
        user_id="u1", handle="Alice", display_name="Alice A.", password_hash="ph", now=5.5
    )
    assert user.handle == "Alice" and user.created_at == 5.5
    assert await store.get_user("u1") == user
    assert await store.get_user_by_handle("aLICE") == user
    assert await store.get_user("nobody") is None
    assert await store.get_user_by_handle("nobody") is None
    with pytest.raises(HandleTaken):
        await store.create_user(
            user_id="u2", handle="ALICE", display_name="x", password_hash="x", now=6.0
        )
    await store.create_user(user_id="u3", handle="bob", display_name="B", password_hash="x", now=7)
    assert await store.get_users(["u1", "u3", "missing"]) == {
        "u1": user,
        "u3": await store.get_user("u3"),
    }
    assert await store.get_users([]) == {}


# -- devices -------------------------------------------------------------------------


async def test_devices_token_lookup_revoke_and_listing(store: Store) -> None:
    await _users(store, "alice")
    d1 = await store.create_device(
        device_id="d1", user_id="alice", name="phone", kind="phone", token_hash="t1", now=1.0
    )
    d2 = await store.create_device(
        device_id="d2", user_id="alice", name="laptop", kind="laptop", token_hash="t2", now=2.0
    )
    assert await store.get_device("d1") == d1
    assert await store.get_device_by_token_hash("t2") == d2
    assert await store.get_device_by_token_hash("nope") is None
    assert await store.list_devices("alice") == [d1, d2]

    assert await store.revoke_device("d1", now=3.0)
    assert not await store.revoke_device("d1", now=4.0)  # already revoked
    assert not await store.revoke_device("unknown", now=4.0)
    assert await store.list_devices("alice") == [d2]
    revoked = await store.get_device_by_token_hash("t1")  # still found, marked revoked
    assert revoked is not None and revoked.revoked_at == 3.0
    assert [d.id for d in await store.list_devices("alice", include_revoked=True)] == ["d1", "d2"]


async def test_device_identity_key_is_set_once(store: Store) -> None:
    await _users(store, "alice")
    for n in (1, 2):
        await store.create_device(
            device_id=f"d{n}", user_id="alice", name="x", kind="bot", token_hash=f"t{n}", now=1.0
        )
    assert await store.get_device_keys(["d1", "d2"]) == {}
    assert await store.set_device_key("d1", "A" * 43, now=2.0) == "A" * 43
    assert await store.set_device_key("d1", "B" * 43, now=3.0) == "A" * 43  # first one stays
    assert await store.set_device_key("d2", "C" * 43, now=3.0) == "C" * 43
    assert await store.get_device_keys(["d1", "d2", "d3"]) == {"d1": "A" * 43, "d2": "C" * 43}
    assert await store.get_device_keys([]) == {}


async def test_push_subscription_roundtrip(store: Store) -> None:
    await _users(store, "alice")
    await store.create_device(
        device_id="d1", user_id="alice", name="web", kind="browser", token_hash="t1", now=1.0
    )
    sub = {"endpoint": "https://push.example/x", "keys": {"p256dh": "k", "auth": "a"}}
    await store.set_push_subscription("d1", sub)
    device = await store.get_device("d1")
    assert device is not None and device.push_subscription == sub
    await store.set_push_subscription("d1", None)
    device = await store.get_device("d1")
    assert device is not None and device.push_subscription is None


# -- calls ---------------------------------------------------------------------------


async def test_create_call_with_participants_in_invitation_order(store: Store) -> None:
    await store.create_call(
        _call("c1"),
        [
            _p("c1", "alice", "joined", role="caller", deadline=None),
            _p("c1", "zed"),
            _p("c1", "bob"),
        ],
    )
    assert await store.get_call("c1") == _call("c1")
    assert await store.get_call("nope") is None
    assert [p.user_id for p in await store.get_participants("c1")] == ["alice", "zed", "bob"]

    # Added later (same timestamp even): after the first ones; a re-invite replaces the row
    # and moves it to the end.
    await store.add_participants([_p("c1", "carol"), _p("c1", "zed", "ringing", at=20.0)])
    parts = await store.get_participants("c1")
    assert [p.user_id for p in parts] == ["alice", "bob", "carol", "zed"]
    assert parts[-1].invited_at == 20.0


async def test_create_call_is_atomic(store: Store) -> None:
    with pytest.raises(Exception):  # noqa: B017 - the driver's IntegrityError
        await store.create_call(_call("c1"), [_p("c1", "bob"), _p("c1", "bob")])
    assert await store.get_call("c1") is None
    assert await store.get_participants("c1") == []


async def test_update_call_compare_and_set(store: Store) -> None:
    await _two_party(store)
    assert not await store.update_call("c1", only_if_state={"active"}, state="ended")
    assert await store.update_call(
        "c1", only_if_state={"ringing"}, state="active", answered_at=12.0
    )
    call = await store.get_call("c1")
    assert call is not None and call.state == "active" and call.answered_at == 12.0
    assert not await store.update_call("c1", only_if_state={"ringing"}, state="ended")
    assert await store.update_call("c1", topology="sfu", room_id="r1")  # unconditional
    assert not await store.update_call("missing", state="ended")
    with pytest.raises(ValueError):
        await store.update_call("c1", initiator_user_id="mallory")
    call = await store.get_call("c1")
    assert call is not None and (call.topology, call.room_id) == ("sfu", "r1")


async def test_update_participant_compare_and_set(store: Store) -> None:
    await _two_party(store)
    assert not await store.update_participant(
        "c1", "bob", only_if_state={"joined"}, state="left", left_at=20.0
    )
    assert await store.update_participant(
        "c1", "bob", only_if_state={"ringing"}, state="joined", device_id="bob-phone", joined_at=11
    )
    bob = (await store.get_participants("c1"))[1]
    assert (bob.state, bob.device_id, bob.joined_at) == ("joined", "bob-phone", 11.0)
    assert not await store.update_participant("c1", "nobody", state="left")
    with pytest.raises(ValueError):
        await store.update_participant("c1", "bob", role="caller")


async def test_concurrent_answers_exactly_one_wins(store: Store) -> None:
    await _two_party(store)
    for _ in range(3):
        results = await asyncio.gather(
            *(
                store.update_participant(
                    "c1", "bob", only_if_state={"ringing"}, state="joined", device_id=f"dev{i}"
                )
                for i in range(2)
            )
        )
        assert sorted(results) == [False, True]
        assert await store.update_participant("c1", "bob", state="ringing")  # reset, again


async def test_expired_rings(store: Store) -> None:
    await _two_party(store, "c1")  # bob's deadline 40
    await store.add_participants([_p("c1", "carol", deadline=35.0), _p("c1", "dan", deadline=90.0)])
    assert await store.expired_rings(34.9) == []
    assert [p.user_id for p in await store.expired_rings(35.0)] == ["carol"]
    assert [p.user_id for p in await store.expired_rings(50.0)] == ["carol", "bob"]
    assert len(await store.expired_rings(50.0, limit=1)) == 1
    await store.update_participant("c1", "carol", only_if_state={"ringing"}, state="missed")
    assert [p.user_id for p in await store.expired_rings(50.0)] == ["bob"]


async def test_live_calls_for_user(store: Store) -> None:
    await _two_party(store, "c1", created_at=10.0)
    await _two_party(store, "c2", created_at=20.0)
    await _two_party(store, "c3", created_at=30.0)
    await store.update_participant("c2", "bob", state="declined")
    await store.update_call("c3", state="ended")
    assert [c.id for c in await store.live_calls_for_user("bob")] == ["c1"]
    assert [c.id for c in await store.live_calls_for_user("alice")] == ["c1", "c2"]
    assert await store.live_calls_for_user("nobody") == []


async def test_call_history_newest_first_with_participants(store: Store) -> None:
    for i, t in enumerate([10.0, 30.0, 20.0]):
        await _two_party(store, f"c{i}", created_at=t)
    await store.create_call(
        _call("other", "carol", created_at=40.0),
        [_p("other", "carol", "joined", role="caller"), _p("other", "dan")],
    )
    history = await store.call_history("bob")
    assert [c.id for c, _ in history] == ["c1", "c2", "c0"]
    assert all([p.user_id for p in ps] == ["alice", "bob"] for _, ps in history)
    assert [c.id for c, _ in await store.call_history("bob", before=30.0)] == ["c2", "c0"]
    assert [c.id for c, _ in await store.call_history("bob", limit=1)] == ["c1"]
    assert await store.call_history("bob", before=10.0) == []
    assert [c.id for c, _ in await store.call_history("dan")] == ["other"]


@pytest.mark.parametrize("make", [SqliteStore, SqlStore])
@pytest.mark.parametrize("url", ["sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:"])
async def test_in_memory_sqlite_shares_one_database(make: Callable[[str], Store], url: str) -> None:
    store, other = make(url), make(url)
    await store.open()
    await other.open()
    try:
        await _users(store, "alice")
        assert await store.get_user("alice") is not None
        assert await other.get_user("alice") is None  # each store has a database of its own
    finally:
        await store.close()
        await other.close()


async def test_nodes_starting_together_migrate_once(store_factory: StoreFactory) -> None:
    stores = await asyncio.gather(*(store_factory.open() for _ in range(3)))
    await _users(stores[0], "alice")
    assert all([await s.get_user("alice") is not None for s in stores])


async def test_add_participants_is_atomic(store: Store) -> None:
    await _two_party(store)
    with pytest.raises(Exception):  # noqa: B017 - the driver's IntegrityError (no such call)
        await store.add_participants([_p("c1", "carol"), _p("missing", "dan")])
    assert [p.user_id for p in await store.get_participants("c1")] == ["alice", "bob"]
    await store.add_participants([])


async def test_compare_and_set_with_no_allowed_state_never_wins(store: Store) -> None:
    await _two_party(store)
    assert not await store.update_call("c1", only_if_state=(), state="ended")
    assert not await store.update_participant("c1", "bob", only_if_state=[], state="left")
    # Without changes the compare alone is answered.
    assert await store.update_call("c1", only_if_state=["ringing"])
    assert not await store.update_call("c1", only_if_state=["ended"])
    assert await store.update_participant("c1", "bob", only_if_state=("ringing", "joined"))


async def test_get_users_many_ids(store: Store) -> None:
    await _users(store, "alice", "bob")
    wanted = {f"missing-{i}" for i in range(1500)} | {"alice", "bob"}
    assert set(await store.get_users(wanted)) == {"alice", "bob"}


# -- call links and guests -----------------------------------------------------------


async def test_call_links_revoke_live_call_and_guests(store: Store) -> None:
    await _users(store, "alice")
    link = CallLink("l1", "alice", "th1", "video", created_at=1.0, expires_at=100.0)
    await store.create_link(link)
    await store.create_link(CallLink("l2", "alice", "th2", "audio", 2.0, 100.0))
    assert await store.get_link("l1") == link
    assert await store.get_link_by_token_hash("th1") == link
    assert await store.get_link_by_token_hash("nope") is None
    assert [x.id for x in await store.list_links("alice")] == ["l2", "l1"]
    # The live call is a compare-and-set: two owners' devices starting it race safely.
    assert await store.set_link_call("l1", "c1", previous=None)
    assert not await store.set_link_call("l1", "c2", previous=None)
    assert await store.set_link_call("l1", "c2", previous="c1")
    assert await store.revoke_link("l1", now=5.0)
    assert not await store.revoke_link("l1", now=6.0)
    assert await store.get_link("l1") == CallLink(
        "l1", "alice", "th1", "video", 1.0, 100.0, revoked_at=5.0, call_id="c2"
    )

    guest = Guest("g1", "l2", "gh1", "Eve", "waiting", created_at=3.0)
    await store.create_guest(guest)
    await store.create_guest(Guest("g2", "l2", "gh2", "Fay", "waiting", created_at=4.0))
    assert await store.get_guest("g1") == guest
    assert await store.get_guest_by_token_hash("gh2") == Guest(
        "g2", "l2", "gh2", "Fay", "waiting", 4.0
    )
    assert await store.update_guest(
        "g1", only_if_state=("waiting",), state="admitted", call_id="c9"
    )
    assert not await store.update_guest("g1", only_if_state=("waiting",), state="refused")
    assert [(g.id, g.state, g.call_id) for g in await store.list_guests("l2")] == [
        ("g1", "admitted", "c9"),
        ("g2", "waiting", None),
    ]
    with pytest.raises(ValueError):
        await store.update_guest("g1", display_name="Mallory")

    # Call history lists the guests let into each call (admitted, or left since).
    await store.create_guest(Guest("g3", "l2", "gh3", "Gil", "waiting", created_at=5.0))
    await store.update_guest("g2", only_if_state=("waiting",), state="refused", call_id="c9")
    await store.update_guest("g3", only_if_state=("waiting",), state="admitted", call_id="c9")
    await store.update_guest("g3", state="left")
    found = await store.call_guests(["c9", "c1"])
    assert {k: [(g.id, g.state) for g in v] for k, v in found.items()} == {
        "c9": [("g1", "admitted"), ("g3", "left")],
        "c1": [],
    }
    assert await store.call_guests([]) == {}
