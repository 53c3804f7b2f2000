"""A node's registration record: what it is, where it listens, how loaded it is.

Records are signed with a key derived from the shared secret (so a record is never valid
as a join token, nor a join token as a record) and carry the time they were made. A
reader refuses, and counts, a record that is malformed, forged, expired (older than the
registry TTL: replayed late), from the future (beyond the allowed clock skew), or older
than one it already accepted from the same node (replayed early). Sans-I/O: time is a
parameter, the reader's memory is the :class:`RecordChecker` object.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from visavis.tokens import TokenError, sign_token, verify_token

NodeKind = Literal["sfu", "relay"]
KINDS: tuple[NodeKind, ...] = ("sfu", "relay")
PURPOSE = "visavis-fleet-record-v1"


class RecordError(ValueError):
    """A registration record refused; ``reason`` is the metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class NodeRecord:
    """One node as it announced itself at ``ts`` (Unix seconds)."""

    node_id: str
    kind: NodeKind
    boot: str
    ts: float
    region: str = "default"
    control_url: str = ""
    media: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()
    capacity: int = 1
    cpu: float = 0.0
    pps: float = 0.0
    rooms: int = 0
    participants: int = 0
    allocations: int = 0  # relays: live TURN allocations
    draining: bool = False

    def with_load(self, **changes: Any) -> NodeRecord:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["media"], data["urls"] = list(self.media), list(self.urls)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NodeRecord:
        try:
            kind = data["kind"]
            if kind not in KINDS:
                raise ValueError(f"unknown kind {kind!r}")
            return cls(
                node_id=_text(data["node_id"]),
                kind=kind,
                boot=_text(data["boot"]),
                ts=float(data["ts"]),
                region=_text(data.get("region", "default")),
                control_url=str(data.get("control_url", "")),
                media=tuple(str(x) for x in data.get("media", ())),
                urls=tuple(str(x) for x in data.get("urls", ())),
                capacity=max(1, int(data.get("capacity", 1))),
                cpu=float(data.get("cpu", 0.0)),
                pps=float(data.get("pps", 0.0)),
                rooms=int(data.get("rooms", 0)),
                participants=int(data.get("participants", 0)),
                allocations=int(data.get("allocations", 0)),
                draining=bool(data.get("draining", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError("malformed", f"malformed record: {exc}") from exc


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 200:
        raise ValueError("expected a short non-empty string")
    return value


def fleet_key(secret: str) -> str:
    """The registry's signing key, derived from the shared secret (domain separation)."""
    return hmac.new(secret.encode(), PURPOSE.encode(), hashlib.sha256).hexdigest()


def sign_record(secret: str, record: NodeRecord, *, ttl: float) -> str:
    """The record as stored in Redis: valid ``ttl`` seconds after ``record.ts``."""
    payload = {"purpose": PURPOSE, "node": record.to_json()}
    return sign_token(fleet_key(secret), payload, now=record.ts + 1, ttl=ttl)


def sign_command(secret: str, node_id: str, command: str, *, now: float, ttl: float) -> str:
    """An operator's signed order to a node (``drain``), valid ``ttl`` seconds."""
    payload = {"purpose": PURPOSE + "/command", "node_id": node_id, "command": command, "ts": now}
    return sign_token(fleet_key(secret), payload, now=now, ttl=ttl)


def verify_command(secret: str, raw: str, node_id: str, *, now: float) -> str:
    """The command in a signed order for ``node_id``; raises :class:`RecordError`."""
    try:
        payload = verify_token(fleet_key(secret), raw, now=now)
    except TokenError as exc:
        raise RecordError(_reason(exc), str(exc)) from exc
    if payload.get("purpose") != PURPOSE + "/command" or payload.get("node_id") != node_id:
        raise RecordError("forged", "command is not for this node")
    return str(payload.get("command", ""))


def _reason(exc: TokenError) -> str:
    text = str(exc)
    if "signature" in text:
        return "forged"
    if "expired" in text:
        return "expired"
    return "malformed"


class RecordChecker:
    """Verifies records read from the registry and remembers the newest per node."""

    def __init__(self, secret: str, *, max_skew: float) -> None:
        self._key = fleet_key(secret)
        self.max_skew = max_skew
        self._newest: dict[str, float] = {}

    def check(self, raw: str, *, now: float) -> NodeRecord:
        """The record in ``raw``, or :class:`RecordError` with the reason it is refused."""
        try:
            payload = verify_token(self._key, raw, now=now)
        except TokenError as exc:
            raise RecordError(_reason(exc), str(exc)) from exc
        if payload.get("purpose") != PURPOSE or not isinstance(payload.get("node"), dict):
            raise RecordError("malformed", "not a registration record")
        record = NodeRecord.from_json(payload["node"])
        if record.ts > now + self.max_skew:
            raise RecordError("future", f"record from {record.ts - now:.1f} s in the future")
        newest = self._newest.get(record.node_id, 0.0)
        if record.ts < newest:
            raise RecordError("replayed", "older than a record already seen from this node")
        self._newest[record.node_id] = record.ts
        return record

    def forget(self, node_id: str) -> None:
        self._newest.pop(node_id, None)

    def node(self, raw: str, kind: NodeKind, node_id: str, *, now: float) -> NodeRecord | None:
        """The record of ``node_id`` (a ``kind``) in ``raw`` if it is valid and says so,
        else None: how a cascade link trusts a peer node, whoever stored the record."""
        try:
            record = self.check(raw, now=now)
        except RecordError:
            return None
        return record if record.node_id == node_id and record.kind == kind else None


class PassedRecords:
    """The registry of the SFU workers of one ``visavis serve`` without Redis: the other
    workers' signed records, which each worker signs as a fleet node signs its own and
    the parent passes on unchanged (:mod:`visavis.supervision`). A record is trusted by
    the same rule as one read from Redis (:meth:`RecordChecker.node`): the parent only
    carries them, as Redis does."""

    def __init__(self, secret: str, *, max_skew: float) -> None:
        self.checker = RecordChecker(secret, max_skew=max_skew)
        self._raw: dict[str, str] = {}

    def add(self, raw: str, *, now: float) -> NodeRecord:
        """Keep ``raw`` as its node's newest record; :class:`RecordError` if refused."""
        record = self.checker.check(raw, now=now)
        self._raw[record.node_id] = raw
        return record

    def record(self, kind: NodeKind, node_id: str, *, now: float) -> NodeRecord | None:
        """``node_id``'s record if one came and is still valid (not expired)."""
        raw = self._raw.get(node_id)
        return None if raw is None else self.checker.node(raw, kind, node_id, now=now)
