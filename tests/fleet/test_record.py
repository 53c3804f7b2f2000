"""Registration records: signed, timestamped; forged, replayed and stale ones refused."""

from __future__ import annotations

import pytest

from visavis.fleet.record import (
    NodeRecord,
    PassedRecords,
    RecordChecker,
    RecordError,
    fleet_key,
    sign_command,
    sign_record,
    verify_command,
)
from visavis.tokens import TokenError, sign_token, verify_token

SECRET = "s3cret"
T0 = 1_800_000_000.0


def record(ts: float = T0, **changes: object) -> NodeRecord:
    base = NodeRecord(node_id="n1", kind="sfu", boot="b1", ts=ts, control_url="ws://h:1/sfu",
                      media=("udp://h:2 (media)",), capacity=100, rooms=2, participants=7)
    return base.with_load(**changes)


def refused(checker: RecordChecker, raw: str, now: float) -> str:
    with pytest.raises(RecordError) as info:
        checker.check(raw, now=now)
    return info.value.reason


def test_a_signed_record_reads_back() -> None:
    checker = RecordChecker(SECRET, max_skew=2)
    assert checker.check(sign_record(SECRET, record(), ttl=3), now=T0 + 1) == record()


def test_forged_tampered_and_foreign_records_are_refused() -> None:
    checker = RecordChecker(SECRET, max_skew=2)
    assert refused(checker, sign_record("other", record(), ttl=3), T0) == "forged"
    raw = sign_record(SECRET, record(), ttl=3)
    part, mac = raw.split(".")
    assert refused(checker, part[:-2] + "AA." + mac, T0) == "forged"
    assert refused(checker, "garbage", T0) == "malformed"
    # A join token (same shared secret) is not a record, and a record is not a join token.
    token = sign_token(SECRET, {"room": "r", "user": "u", "device": "d"}, now=T0, ttl=60)
    assert refused(checker, token, T0) == "forged"
    with pytest.raises(TokenError):
        verify_token(SECRET, raw, now=T0)


def test_replayed_records_are_refused() -> None:
    checker = RecordChecker(SECRET, max_skew=2)
    old = sign_record(SECRET, record(T0), ttl=3)
    new = sign_record(SECRET, record(T0 + 1, rooms=3), ttl=3)
    checker.check(old, now=T0)
    checker.check(new, now=T0 + 1)
    assert checker.check(new, now=T0 + 1.5).rooms == 3  # the same record read again: fine
    assert refused(checker, old, T0 + 1.5) == "replayed"  # older than one already seen
    assert refused(RecordChecker(SECRET, max_skew=2), old, T0 + 10) == "expired"  # too late
    ahead = sign_record(SECRET, record(T0 + 60), ttl=3)
    assert refused(checker, ahead, T0 + 2) == "future"


def test_malformed_fields_are_refused() -> None:
    checker = RecordChecker(SECRET, max_skew=2)
    bad = sign_token(
        fleet_key(SECRET),
        {"purpose": "visavis-fleet-record-v1", "node": {"node_id": "", "kind": "sfu"}},
        now=T0,
        ttl=3,
    )
    assert refused(checker, bad, T0) == "malformed"


def test_drain_orders_are_signed_for_one_node() -> None:
    order = sign_command(SECRET, "n1", "drain", now=T0, ttl=60)
    assert verify_command(SECRET, order, "n1", now=T0 + 1) == "drain"
    with pytest.raises(RecordError):
        verify_command(SECRET, order, "n2", now=T0 + 1)
    with pytest.raises(RecordError):
        verify_command("other", order, "n1", now=T0 + 1)
    with pytest.raises(RecordError):
        verify_command(SECRET, order, "n1", now=T0 + 120)


def test_records_passed_on_by_the_parent_are_trusted_as_the_registrys() -> None:
    """The SFU workers of one visavis serve: the parent carries the records, the rule
    that trusts them is the registry's (signature, expiry, node id and kind)."""
    book = PassedRecords(SECRET, max_skew=2)
    assert book.record("sfu", "n1", now=T0) is None  # never heard of
    assert book.add(sign_record(SECRET, record(), ttl=3), now=T0) == record()
    assert book.record("sfu", "n1", now=T0 + 1) == record()
    assert book.record("relay", "n1", now=T0 + 1) is None  # not what it says it is
    assert book.record("sfu", "n2", now=T0 + 1) is None
    assert book.record("sfu", "n1", now=T0 + 5) is None  # expired: no newer heartbeat
    with pytest.raises(RecordError) as forged:
        book.add(sign_record("not-the-secret", record(node_id="n2"), ttl=3), now=T0)
    assert forged.value.reason == "forged" and book.record("sfu", "n2", now=T0) is None
