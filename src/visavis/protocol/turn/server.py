"""The TURN server state machine (RFC 8656), sans I/O.

Theory of operation
-------------------
The asyncio shell owns the sockets and the clock. For every datagram or stream frame a
client sends it calls :meth:`TurnServer.handle_stun` (first byte 0-3) or
:meth:`TurnServer.handle_channel_data` (first byte 64-79) with the client's
:class:`FiveTuple` and ``now``; for every datagram a relay socket receives from a peer it
calls :meth:`TurnServer.handle_peer_data`. The answers are bytes to send back to the
client, a :class:`Forward` (send these bytes from this relay socket to that peer), or
``None`` (drop; the reason is counted in :attr:`TurnServer.stats`).

Timers: everything in the core that lapses (allocations, permissions, channels, port
reservations, RFC 6062 connections waiting for their bind, idle rate-limit state) has a
deadline, and :meth:`TurnServer.next_deadline` is the earliest of them. The shell arms one
timer for it, calls :meth:`TurnServer.sweep` when it fires, and re-arms whenever a call
into the core moved the deadline earlier (an O(1) comparison: the core keeps a lower bound
that entry points lower and :meth:`sweep` recomputes exactly). Nonces need no timer: they
are stateless (an HMAC over their issue time), so a stale one is simply refused.

Relay sockets come from an injected :class:`RelayAllocator` (the shell binds a UDP socket
in the configured port range; tests pass a fake). Requests are processed in this order
(RFC 8489 9.2.4, RFC 8656 7-11): rate limit for unauthenticated traffic, authentication
(401 / 438 / 400), unknown comprehension-required attributes (420), then the method's own
checks. Errors raised as :class:`TurnError` become error responses, integrity-protected
when the request was authenticated. Responses to unauthenticated requests are trimmed,
or dropped, so that they are never more than ``amplification_factor`` times the request.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from visavis.protocol.ratelimit import TokenBucket
from visavis.protocol.stun import (
    AdditionalAddressFamily,
    AddressErrorCode,
    Attribute,
    ChannelNumber,
    ConnectionId,
    Data,
    DontFragment,
    ErrorCodeAttr,
    EvenPort,
    Fingerprint,
    Lifetime,
    Message,
    MessageClass,
    MessageIntegrity,
    MessageIntegritySha256,
    Method,
    Nonce,
    PasswordAlgorithm,
    PasswordAlgorithmId,
    PasswordAlgorithms,
    PasswordAlgorithmValue,
    Realm,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
    SecurityFeatures,
    Software,
    StunParseError,
    UnknownAttributes,
    Userhash,
    Username,
    XorMappedAddress,
    XorPeerAddress,
    XorRelayedAddress,
    encode_message,
    parse_message,
)
from visavis.protocol.stun.addresses import IPAddress
from visavis.protocol.stun.constants import REASONS, TransportProtocol
from visavis.protocol.turn.allocation import Addr, Allocation, Channel, FiveTuple, Relay
from visavis.protocol.turn.auth import CredentialStore, Identity, NonceManager
from visavis.protocol.turn.channel_data import CHANNEL_MAX, CHANNEL_MIN
from visavis.protocol.turn.errors import CapacityError, TurnError
from visavis.protocol.turn.peer_policy import PeerPolicy

_CHANNEL_HEAD = struct.Struct("!HH")
_FAMILY_CODE = {4: 0x01, 6: 0x02}
_CODE_FAMILY = {0x01: 4, 0x02: 6}
ADVERTISED_ALGORITHMS = (
    PasswordAlgorithmValue(PasswordAlgorithmId.MD5),
    PasswordAlgorithmValue(PasswordAlgorithmId.SHA256),
)


class RelayAllocator(Protocol):
    """Opens relay sockets for the core (the shell implements it; tests fake it)."""

    def allocate(
        self, family: int, five_tuple: FiveTuple, *, even_port: bool, port: int | None = None
    ) -> tuple[Addr, Any]:
        """Bind a relay socket of ``family`` (4 or 6), on ``port`` if given; return
        (relayed address, handle).

        :raises CapacityError: when no (or not that) port is available.
        """
        ...

    def release(self, handle: Any) -> None:
        """Close a relay socket returned by :meth:`allocate` or :meth:`allocate_tcp`."""
        ...

    def allocate_tcp(self, family: int, five_tuple: FiveTuple) -> tuple[Addr, Any]:
        """Listen on a TCP relayed address for an RFC 6062 allocation.

        :raises CapacityError: when no port is left.
        """
        ...

    def reserve(self, family: int, port: int) -> Any:
        """Hold ``port`` for a later allocation (EVEN-PORT with R bit, RFC 8656 7.2).

        :raises CapacityError: when the port is taken.
        """
        ...

    def release_reservation(self, handle: Any) -> None:
        """Give a port held by :meth:`reserve` back."""
        ...


RESERVATION_LIFETIME = 30.0
BIND_TIMEOUT = 30.0  # RFC 6062 5.3/5.4: a peer connection not bound by then is closed


class AllocationObserver(Protocol):
    """Hook for a shell that caches the forwarding state (the relay's fast-path table)."""

    def allocation_changed(self, alloc: Allocation) -> None:
        """Permissions or channels of ``alloc`` were added, refreshed or expired."""
        ...

    def allocation_deleted(self, alloc: Allocation) -> None:
        """``alloc`` is going away; called before its counters are folded into totals."""
        ...

    def flush_counters(self) -> None:
        """Add packets the shell relayed on its own into the allocations' counters."""
        ...


class Forward(NamedTuple):
    """Send ``data`` from relay socket ``handle`` to ``peer``."""

    handle: Any
    peer: Addr
    data: bytes


@dataclass
class TurnConfig:
    """Policy knobs of the core (the shell maps coturn-named settings onto them)."""

    realm: str = "visavis"
    software: str | None = "visavis"
    relay_families: frozenset[int] = frozenset({4})
    default_lifetime: int = 600
    max_lifetime: int = 3600
    permission_lifetime: float = 300.0
    channel_lifetime: float = 600.0
    nonce_lifetime: float = 600.0
    nonce_features: SecurityFeatures = (
        SecurityFeatures.PASSWORD_ALGORITHMS | SecurityFeatures.USERNAME_ANONYMITY
    )
    user_quota: int = 0  # allocations per account, 0 = unlimited
    total_quota: int = 0  # allocations in all, 0 = unlimited
    max_bps: int = 0  # bytes per second per allocation and direction, 0 = unlimited
    max_permissions: int = 256  # per allocation
    unauth_rate: float = 20.0  # unauthenticated requests per second per client IP
    unauth_burst: float = 40.0
    amplification_factor: int = 4


@dataclass
class TurnStats:
    """Counters the metrics collector exports."""

    requests: Counter[str] = field(default_factory=Counter)
    responses: Counter[int] = field(default_factory=Counter)  # error code, 0 = success
    auth_failures: Counter[str] = field(default_factory=Counter)
    denied_peers: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    allocations_created: int = 0
    allocations_deleted: int = 0
    packets_to_peer: int = 0
    bytes_to_peer: int = 0
    packets_to_client: int = 0
    bytes_to_client: int = 0


class ConnectPeer(NamedTuple):
    """RFC 6062 Connect: open a TCP connection from relay ``handle`` to ``peer``, then
    report the outcome with :meth:`TurnServer.connect_result`."""

    connection_id: int
    handle: Any
    peer: Addr


class Bound(NamedTuple):
    """RFC 6062 ConnectionBind succeeded: send ``response`` on this (data) connection, then
    pipe its bytes to and from the peer connection ``connection_id``."""

    response: bytes
    connection_id: int


@dataclass(slots=True, eq=False)
class TcpPeerConnection:
    """A TCP connection between a TCP allocation's relay and a peer (RFC 6062 2)."""

    connection_id: int
    five_tuple: FiveTuple  # the allocation's control connection
    peer: Addr
    expiry: float  # bind deadline (BIND_TIMEOUT), inf once bound
    state: str = "connecting"  # connecting -> pending-bind -> bound
    request: Message | None = None
    identity: Identity | None = None


Outcome = bytes | Forward | ConnectPeer | Bound | None


class _Reply(Exception):
    """Short-circuit a request with these bytes, action, or silence."""

    def __init__(self, data: Outcome) -> None:
        self.data = data


_NEVER = float("inf")


def _family(ip: IPAddress) -> int:
    return ip.version


class TurnServer:
    """The relay's brain: allocations by five-tuple, authentication, peer policy.

    :param config: policy knobs.
    :param credentials: resolves usernames to keys.
    :param policy: which peers may be relayed to.
    :param allocator: opens and closes relay sockets.
    :param random_bytes: randomness (transaction IDs of Data indications, nonce key).
    """

    def __init__(
        self,
        config: TurnConfig,
        credentials: CredentialStore,
        policy: PeerPolicy,
        allocator: RelayAllocator,
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.config = config
        self.credentials = credentials
        self.policy = policy
        self.allocator = allocator
        self.random_bytes = random_bytes
        self.nonces = NonceManager(
            random_bytes(32), lifetime=config.nonce_lifetime, features=config.nonce_features
        )
        self.allocations: dict[FiveTuple, Allocation] = {}
        self.per_account: Counter[str] = Counter()
        self.stats = TurnStats()
        self._unauth: dict[str, TokenBucket] = {}  # unauthenticated traffic, per client IP
        # token -> (family, port, held socket, expiry)
        self.reservations: dict[bytes, tuple[int, int, Any, float]] = {}
        self.tcp_connections: dict[int, TcpPeerConnection] = {}
        self.observer: AllocationObserver | None = None
        # lower bound on the earliest deadline (see next_deadline); inf = nothing timed
        self._deadline = _NEVER
        self._unauth_gc = _NEVER  # when idle rate-limit buckets are next dropped
        self._algorithms = PasswordAlgorithms(ADVERTISED_ALGORITHMS)
        self._requests: dict[int, Callable[[Message, FiveTuple, Identity, float], list[Attribute]]]
        self._requests = {
            Method.ALLOCATE: self._on_allocate,
            Method.REFRESH: self._on_refresh,
            Method.CREATE_PERMISSION: self._on_create_permission,
            Method.CHANNEL_BIND: self._on_channel_bind,
            Method.CONNECT: self._on_connect,
            Method.CONNECTION_BIND: self._on_connection_bind,
        }

    # ------------------------------------------------------------------ entry points
    def handle_stun(self, data: bytes, ft: FiveTuple, now: float) -> Outcome:
        """A STUN message from a client: the response to send back, a Forward, an RFC 6062
        action (:class:`ConnectPeer`, :class:`Bound`), or None."""
        try:
            msg = parse_message(data)
        except StunParseError as exc:
            self.stats.dropped["malformed"] += 1
            header = exc.header
            if header is None or header.cls != MessageClass.REQUEST:
                return None
            if not self._unauth_ok(ft.client[0], now):
                return None
            attrs: list[Attribute] = [ErrorCodeAttr.of(exc.error_code)]
            out = encode_message(header.method, MessageClass.ERROR, header.transaction_id, attrs)
            self.stats.responses[exc.error_code] += 1
            return self._bounded(out, len(data))
        try:
            if msg.cls == MessageClass.REQUEST:
                return self._on_request(msg, ft, now, len(data))
            if msg.cls == MessageClass.INDICATION and msg.method == Method.SEND:
                return self._on_send(msg, ft, now)
        except _Reply as reply:
            return reply.data
        self.stats.dropped["unexpected-class"] += 1
        return None

    def handle_channel_data(self, data: bytes, ft: FiveTuple, now: float) -> Forward | None:
        """A ChannelData message from a client: where to relay its payload, or None."""
        alloc = self.allocations.get(ft)
        if alloc is None or len(data) < 4:
            self.stats.dropped["channel-no-allocation"] += 1
            return None
        number, length = _CHANNEL_HEAD.unpack_from(data)
        ch = alloc.channels.get(number)
        if ch is None or ch.expiry < now or 4 + length > len(data):
            alloc.dropped += 1
            return None
        peer = ch.peer
        perm = alloc.permissions.get(peer[0])
        if perm is None or perm < now:
            alloc.dropped += 1
            return None
        bucket = alloc.bucket_out
        if bucket is not None and not bucket.take(length, now):
            alloc.dropped += 1
            return None
        alloc.packets_to_peer += 1
        alloc.bytes_to_peer += length
        return Forward(ch.handle, peer, data[4 : 4 + length])

    def handle_peer_data(
        self, alloc: Allocation, peer: Addr, data: bytes, now: float
    ) -> bytes | None:
        """A datagram from ``peer`` on one of ``alloc``'s relays: the bytes for the client."""
        perm = alloc.permissions.get(peer[0])
        if perm is None or perm < now:
            alloc.dropped += 1
            return None
        bucket = alloc.bucket_in
        if bucket is not None and not bucket.take(len(data), now):
            alloc.dropped += 1
            return None
        alloc.packets_to_client += 1
        alloc.bytes_to_client += len(data)
        ch = alloc.channel_by_peer.get(peer)
        if ch is not None and ch.expiry >= now:
            return alloc.channel_frame(ch, data)
        ip = ipaddress.ip_address(peer[0])
        return encode_message(
            Method.DATA,
            MessageClass.INDICATION,
            self.random_bytes(12),
            (XorPeerAddress(ip, peer[1]), Data(data)),
        )

    def connection_closed(self, ft: FiveTuple, now: float) -> None:
        """A TCP/TLS client connection closed: its allocation goes with it (RFC 8656 5)."""
        alloc = self.allocations.get(ft)
        if alloc is not None:
            self._delete(alloc)

    def sweep(self, now: float) -> list[int]:
        """Expire what lapsed by ``now`` (allocations, permissions, channels, port
        reservations, unbound RFC 6062 connections, idle rate-limit state) and recompute
        :meth:`next_deadline`; return the RFC 6062 connections to close (not bound within
        30 s, or of a deleted allocation).

        Something whose expiry is ``now`` exactly is expired here (the hot paths still
        accept it at that instant), so a timer that fires on the deadline finds work."""
        for alloc in [a for a in self.allocations.values() if a.expiry <= now]:
            self._delete(alloc)
        observer = self.observer
        deadline = _NEVER
        for alloc in self.allocations.values():
            if alloc.expire(now) and observer is not None:
                observer.allocation_changed(alloc)
            deadline = min(deadline, alloc.next_deadline())
        for token in [t for t, r in self.reservations.items() if r[3] <= now]:
            self.allocator.release_reservation(self.reservations.pop(token)[2])
        for _, _, _, expiry in self.reservations.values():
            deadline = min(deadline, expiry)
        if self._unauth_gc <= now:
            for ip in [ip for ip, b in self._unauth.items() if b.full(now)]:
                del self._unauth[ip]
            # A bucket left here is full within one refill time unless it is used again.
            self._unauth_gc = now + self._refill_time() if self._unauth else _NEVER
        deadline = min(deadline, self._unauth_gc)
        stale = [
            c.connection_id
            for c in self.tcp_connections.values()
            if c.expiry <= now or c.five_tuple not in self.allocations
        ]
        for cid in stale:
            del self.tcp_connections[cid]
        for conn in self.tcp_connections.values():
            deadline = min(deadline, conn.expiry)
        self._deadline = deadline
        return stale

    def next_deadline(self) -> float | None:
        """When :meth:`sweep` should next run (None: nothing is timed).

        Never later than the earliest deadline, possibly earlier: refreshes and deletions
        do not raise it (that would cost a scan per request), so a sweep may find nothing
        to do, and sets the exact value again."""
        return None if self._deadline == _NEVER else self._deadline

    def _due(self, when: float) -> None:
        """Something lapses at ``when``: keep :meth:`next_deadline` no later than it."""
        if when < self._deadline:
            self._deadline = when

    def _refill_time(self) -> float:
        cfg = self.config
        return cfg.unauth_burst / cfg.unauth_rate if cfg.unauth_rate > 0 else 60.0

    def close(self) -> None:
        """Delete every allocation (releasing relay sockets)."""
        for alloc in list(self.allocations.values()):
            self._delete(alloc)
        for _, _, held, _ in self.reservations.values():
            self.allocator.release_reservation(held)
        self.reservations.clear()

    def totals(self) -> tuple[int, int, int, int]:
        """(packets to peers, bytes to peers, packets to clients, bytes to clients)."""
        if self.observer is not None:
            self.observer.flush_counters()
        s = self.stats
        p_out, b_out, p_in, b_in = (
            s.packets_to_peer,
            s.bytes_to_peer,
            s.packets_to_client,
            s.bytes_to_client,
        )
        for a in self.allocations.values():
            p_out += a.packets_to_peer
            b_out += a.bytes_to_peer
            p_in += a.packets_to_client
            b_in += a.bytes_to_client
        return p_out, b_out, p_in, b_in

    # ------------------------------------------------------------------ requests
    def _on_request(self, msg: Message, ft: FiveTuple, now: float, size: int) -> Outcome:
        name = Method(msg.method).name if msg.method in Method._value2member_map_ else "unknown"
        self.stats.requests[name] += 1
        if msg.method == Method.BINDING:
            return self._on_binding(msg, ft, now, size)
        handler = self._requests.get(msg.method)
        if handler is None:
            if not self._unauth_ok(ft.client[0], now):
                return None
            return self._bounded(self._error(msg, 400, None), size)
        identity = self._authenticate(msg, ft, now, size)
        try:
            unknown = msg.unknown_required()
            if unknown:
                raise TurnError(420)
            existing = self.allocations.get(ft)
            if existing is not None and existing.username != identity.username:
                raise TurnError(441)
            attrs = handler(msg, ft, identity, now)
        except TurnError as err:
            extra: list[Attribute] = []
            if err.code == 420:
                extra.append(UnknownAttributes(tuple(msg.unknown_required())))
            return self._error(msg, err.code, identity, reason=err.reason, extra=extra)
        if self.config.software:
            attrs.append(Software(self.config.software))
        self.stats.responses[0] += 1
        return self._sign(msg, MessageClass.SUCCESS, attrs, identity)

    def _on_binding(self, msg: Message, ft: FiveTuple, now: float, size: int) -> bytes | None:
        if not self._unauth_ok(ft.client[0], now):
            return None
        unknown = msg.unknown_required()
        if unknown:
            extra: list[Attribute] = [UnknownAttributes(tuple(unknown))]
            return self._bounded(self._error(msg, 420, None, extra=extra), size)
        attrs: list[Attribute] = [
            XorMappedAddress(ipaddress.ip_address(ft.client[0]), ft.client[1])
        ]
        self.stats.responses[0] += 1
        out = encode_message(
            msg.method,
            MessageClass.SUCCESS,
            msg.transaction_id,
            attrs,
            fingerprint=msg.get(Fingerprint) is not None,
        )
        return self._bounded(out, size)

    def _authenticate(self, msg: Message, ft: FiveTuple, now: float, size: int) -> Identity:
        """RFC 8489 9.2.4: return who signed ``msg`` or raise :class:`_Reply`."""
        mi = msg.get(MessageIntegrity)
        mi256 = msg.get(MessageIntegritySha256)
        ip = ft.client[0]
        if mi is None and mi256 is None:
            self.stats.auth_failures["missing-integrity"] += 1
            raise _Reply(self._challenge(msg, ft, now, size, 401))
        username_attr = msg.get(Username)
        uhash = msg.get(Userhash)
        realm = msg.get(Realm)
        nonce = msg.get(Nonce)
        if (username_attr is None and uhash is None) or realm is None or nonce is None:
            self.stats.auth_failures["bad-request"] += 1
            if not self._unauth_ok(ip, now):
                raise _Reply(None)
            raise _Reply(self._bounded(self._error(msg, 400, None), size))
        if not self.nonces.check(nonce.value, ip, now):
            self.stats.auth_failures["stale-nonce"] += 1
            raise _Reply(self._challenge(msg, ft, now, size, 438))
        algorithm = PasswordAlgorithmId.MD5
        chosen = msg.get(PasswordAlgorithm)
        offered = msg.get(PasswordAlgorithms)
        if SecurityFeatures.PASSWORD_ALGORITHMS in self.nonces.features:
            if (chosen is None) != (offered is None):
                raise _Reply(self._bounded(self._error(msg, 400, None), size))
            if chosen is not None and offered is not None:
                if offered.algorithms != ADVERTISED_ALGORITHMS or chosen.algorithm not in (
                    PasswordAlgorithmId.MD5,
                    PasswordAlgorithmId.SHA256,
                ):
                    self.stats.auth_failures["bad-algorithm"] += 1
                    raise _Reply(self._bounded(self._error(msg, 400, None), size))
                algorithm = PasswordAlgorithmId(chosen.algorithm)
        if username_attr is not None:
            username: str | None = username_attr.value
        else:
            assert uhash is not None
            username = self.credentials.username_for_hash(uhash.digest)
        identity = None
        if username is not None and realm.value == self.config.realm:
            identity = self.credentials.identify(username, algorithm, now)
        if identity is None:
            self.stats.auth_failures["unknown-user"] += 1
            raise _Reply(self._challenge(msg, ft, now, size, 401))
        if not msg.check_integrity(identity.key):
            self.stats.auth_failures["bad-integrity"] += 1
            raise _Reply(self._challenge(msg, ft, now, size, 401))
        return identity

    def _challenge(
        self, msg: Message, ft: FiveTuple, now: float, size: int, code: int
    ) -> bytes | None:
        """401 or 438 with REALM and a fresh NONCE (and PASSWORD-ALGORITHMS)."""
        if not self._unauth_ok(ft.client[0], now):
            return None
        self.stats.responses[code] += 1
        nonce = Nonce(self.nonces.issue(ft.client[0], now))
        realm = Realm(self.config.realm)
        with_algs = SecurityFeatures.PASSWORD_ALGORITHMS in self.nonces.features
        budget = max(size * self.config.amplification_factor, 0)
        for reason, algs in ((True, with_algs), (False, with_algs), (False, False)):
            attrs: list[Attribute] = [ErrorCodeAttr.of(code, None if reason else ""), realm, nonce]
            if algs:
                attrs.append(self._algorithms)
            out = encode_message(msg.method, MessageClass.ERROR, msg.transaction_id, attrs)
            if len(out) <= budget:
                return out
        self.stats.dropped["amplification"] += 1
        return None

    # ------------------------------------------------------------------ methods
    def _on_allocate(
        self, msg: Message, ft: FiveTuple, ident: Identity, now: float
    ) -> list[Attribute]:
        existing = self.allocations.get(ft)
        if existing is not None:
            if existing.transaction_id == msg.transaction_id and existing.success_response:
                raise _Reply(existing.success_response)
            raise TurnError(437)
        transport = msg.get(RequestedTransport)
        if transport is None:
            raise TurnError(400, "Missing REQUESTED-TRANSPORT")
        even = msg.get(EvenPort)
        token = msg.get(ReservationToken)
        req_family = msg.get(RequestedAddressFamily)
        add_family = msg.get(AdditionalAddressFamily)
        tcp = transport.protocol == TransportProtocol.TCP
        if tcp:
            # RFC 6062 5.1: TCP relays only for clients on TCP/TLS, without UDP-only options.
            no_tcp_options = (even, token, add_family, msg.get(DontFragment))
            if not ft.stream or any(a is not None for a in no_tcp_options):
                raise TurnError(400)
        elif transport.protocol != TransportProtocol.UDP:
            raise TurnError(442)
        if msg.get(DontFragment) is not None:
            raise TurnError(420)
        if token is not None and (even is not None or req_family is not None):
            raise TurnError(400)
        if req_family is not None and add_family is not None:
            raise TurnError(400)
        cfg = self.config
        reservation: tuple[int, int, Any, float] | None = None
        if token is not None:
            reservation = self.reservations.pop(token.token, None)
            if reservation is None:
                raise TurnError(508, "Unknown reservation")
            families = [reservation[0]]
        elif add_family is not None:
            if add_family.family != 0x02 or (even is not None and even.reserve):
                raise TurnError(400)
            families = [4, 6]
        elif req_family is not None:
            fam = _CODE_FAMILY.get(req_family.family)
            if fam is None or fam not in cfg.relay_families:
                raise TurnError(440)
            families = [fam]
        else:
            families = [4]
            if 4 not in cfg.relay_families:
                raise TurnError(440)
        if cfg.total_quota and len(self.allocations) >= cfg.total_quota:
            raise TurnError(486)
        if cfg.user_quota and self.per_account[ident.account] >= cfg.user_quota:
            raise TurnError(486)
        relays: dict[int, Relay] = {}
        address_error: AddressErrorCode | None = None
        new_token: bytes | None = None
        if tcp:
            fam = families[0]
            try:
                addr, handle = self.allocator.allocate_tcp(fam, ft)
            except CapacityError:
                raise TurnError(508) from None
            relays[fam] = Relay(fam, addr, handle)
        elif reservation is not None:
            fam, port, held, _ = reservation
            self.allocator.release_reservation(held)
            try:
                addr, handle = self.allocator.allocate(fam, ft, even_port=False, port=port)
            except CapacityError:
                raise TurnError(508) from None
            relays[fam] = Relay(fam, addr, handle)
        elif even is not None and even.reserve:
            fam = families[0]
            addr, handle, new_token = self._allocate_pair(fam, ft, now)
            relays[fam] = Relay(fam, addr, handle)
        for fam in families if token is None and not (even and even.reserve) and not tcp else []:
            if fam not in cfg.relay_families:
                address_error = AddressErrorCode(_FAMILY_CODE[fam], 440, REASONS[440])
                continue
            try:
                addr, handle = self.allocator.allocate(fam, ft, even_port=even is not None)
            except CapacityError:
                if fam == families[0]:
                    for relay in relays.values():
                        self.allocator.release(relay.handle)
                    raise TurnError(508) from None
                address_error = AddressErrorCode(_FAMILY_CODE[fam], 508, REASONS[508])
                continue
            relays[fam] = Relay(fam, addr, handle)
        requested = msg.get(Lifetime)
        lifetime = cfg.default_lifetime
        if requested is not None:
            lifetime = max(cfg.default_lifetime, min(requested.seconds, cfg.max_lifetime))
        alloc = Allocation(
            five_tuple=ft,
            username=ident.username,
            account=ident.account,
            key=ident.key,
            algorithm=ident.algorithm,
            relays=relays,
            expiry=now + lifetime,
            transaction_id=msg.transaction_id,
            tcp=tcp,
        )
        if cfg.max_bps:
            alloc.bucket_in = TokenBucket(cfg.max_bps, cfg.max_bps, now)
            alloc.bucket_out = TokenBucket(cfg.max_bps, cfg.max_bps, now)
        self.allocations[ft] = alloc
        self._due(alloc.expiry)
        self.per_account[ident.account] += 1
        self.stats.allocations_created += 1
        attrs: list[Attribute] = [
            XorRelayedAddress(ipaddress.ip_address(r.address[0]), r.address[1])
            for r in relays.values()
        ]
        attrs.append(Lifetime(lifetime))
        attrs.append(XorMappedAddress(ipaddress.ip_address(ft.client[0]), ft.client[1]))
        if address_error is not None:
            attrs.append(address_error)
        if new_token is not None:
            attrs.append(ReservationToken(new_token))
        if cfg.software:
            attrs.append(Software(cfg.software))
        alloc.success_response = self._sign(msg, MessageClass.SUCCESS, attrs, ident)
        self.stats.responses[0] += 1
        raise _Reply(alloc.success_response)

    def _allocate_pair(self, family: int, ft: FiveTuple, now: float) -> tuple[Addr, Any, bytes]:
        """An even port for ``ft`` and the next port held under a new reservation token."""
        for _ in range(16):
            try:
                addr, handle = self.allocator.allocate(family, ft, even_port=True)
            except CapacityError:
                break
            try:
                held = self.allocator.reserve(family, addr[1] + 1)
            except CapacityError:
                self.allocator.release(handle)
                continue
            token = self.random_bytes(8)
            expiry = now + RESERVATION_LIFETIME
            self.reservations[token] = (family, addr[1] + 1, held, expiry)
            self._due(expiry)
            return addr, handle, token
        raise TurnError(508)

    def _allocation(self, ft: FiveTuple) -> Allocation:
        alloc = self.allocations.get(ft)
        if alloc is None:
            raise TurnError(437)
        return alloc

    def _on_refresh(
        self, msg: Message, ft: FiveTuple, ident: Identity, now: float
    ) -> list[Attribute]:
        alloc = self._allocation(ft)
        fam_attr = msg.get(RequestedAddressFamily)
        if fam_attr is not None and _CODE_FAMILY.get(fam_attr.family) not in alloc.relays:
            raise TurnError(443)
        requested = msg.get(Lifetime)
        cfg = self.config
        lifetime = cfg.default_lifetime
        if requested is not None:
            lifetime = min(requested.seconds, cfg.max_lifetime)
            if lifetime:
                lifetime = max(lifetime, cfg.default_lifetime)
        if lifetime == 0:
            self._delete(alloc)
        else:
            alloc.expiry = now + lifetime
            self._due(alloc.expiry)
        return [Lifetime(lifetime)]

    def _check_peer(self, alloc: Allocation, attr: XorPeerAddress) -> Relay:
        relay = alloc.relays.get(_family(attr.ip))
        if relay is None:
            raise TurnError(443)
        reason = self.policy.check(attr.ip)
        if reason is not None:
            self.stats.denied_peers[reason] += 1
            raise TurnError(403, "Forbidden IP")
        return relay

    def _on_create_permission(
        self, msg: Message, ft: FiveTuple, ident: Identity, now: float
    ) -> list[Attribute]:
        alloc = self._allocation(ft)
        peers = msg.get_all(XorPeerAddress)
        if not peers:
            raise TurnError(400, "Missing XOR-PEER-ADDRESS")
        for peer in peers:
            self._check_peer(alloc, peer)
        new = {str(p.ip) for p in peers} - alloc.permissions.keys()
        if len(alloc.permissions) + len(new) > self.config.max_permissions:
            raise TurnError(508, "Too many permissions")
        expiry = now + self.config.permission_lifetime
        for peer in peers:
            alloc.permissions[str(peer.ip)] = expiry
        self._due(expiry)
        if self.observer is not None:
            self.observer.allocation_changed(alloc)
        return []

    def _on_channel_bind(
        self, msg: Message, ft: FiveTuple, ident: Identity, now: float
    ) -> list[Attribute]:
        alloc = self._allocation(ft)
        if alloc.tcp:
            raise TurnError(400, "No channels on TCP allocations")
        number_attr = msg.get(ChannelNumber)
        peer_attr = msg.get(XorPeerAddress)
        if number_attr is None or peer_attr is None:
            raise TurnError(400)
        number = number_attr.number
        if not CHANNEL_MIN <= number <= CHANNEL_MAX:
            raise TurnError(400, "Bad channel number")
        relay = self._check_peer(alloc, peer_attr)
        peer: Addr = (str(peer_attr.ip), peer_attr.port)
        bound = alloc.channels.get(number)
        if bound is not None and bound.peer != peer:
            raise TurnError(400, "Channel bound to another peer")
        by_peer = alloc.channel_by_peer.get(peer)
        if by_peer is not None and by_peer.number != number:
            raise TurnError(400, "Peer bound to another channel")
        if (
            peer[0] not in alloc.permissions
            and len(alloc.permissions) >= self.config.max_permissions
        ):
            raise TurnError(508, "Too many permissions")
        expiry = now + self.config.channel_lifetime
        if bound is None:
            channel = Channel(number, peer, expiry, relay.handle)
            alloc.channels[number] = channel
            alloc.channel_by_peer[peer] = channel
        else:
            bound.expiry = expiry
        alloc.permissions[peer[0]] = max(
            alloc.permissions.get(peer[0], 0.0), now + self.config.permission_lifetime
        )
        self._due(min(expiry, alloc.permissions[peer[0]]))
        if self.observer is not None:
            self.observer.allocation_changed(alloc)
        return []

    def _on_send(self, msg: Message, ft: FiveTuple, now: float) -> Forward | None:
        alloc = self.allocations.get(ft)
        peer_attr = msg.get(XorPeerAddress)
        data = msg.get(Data)
        if alloc is None or peer_attr is None or data is None:
            self.stats.dropped["bad-send"] += 1
            return None
        relay = alloc.relays.get(_family(peer_attr.ip))
        ip = str(peer_attr.ip)
        if relay is None or alloc.tcp or not alloc.permitted(ip, now):
            alloc.dropped += 1
            return None
        bucket = alloc.bucket_out
        if bucket is not None and not bucket.take(len(data.data), now):
            alloc.dropped += 1
            return None
        alloc.packets_to_peer += 1
        alloc.bytes_to_peer += len(data.data)
        return Forward(relay.handle, (ip, peer_attr.port), data.data)

    # ------------------------------------------------------------------ RFC 6062
    def _new_connection_id(self) -> int:
        while True:
            cid = int.from_bytes(self.random_bytes(4), "big")
            if cid and cid not in self.tcp_connections:
                return cid

    def _on_connect(
        self, msg: Message, ft: FiveTuple, ident: Identity, now: float
    ) -> list[Attribute]:
        """RFC 6062 5.2: the client asks us to open a TCP connection to a peer."""
        alloc = self._allocation(ft)
        if not alloc.tcp:
            raise TurnError(400, "Not a TCP allocation")
        peer_attr = msg.get(XorPeerAddress)
        if peer_attr is None:
            raise TurnError(400, "Missing XOR-PEER-ADDRESS")
        relay = self._check_peer(alloc, peer_attr)
        peer: Addr = (str(peer_attr.ip), peer_attr.port)
        if any(c.five_tuple == ft and c.peer == peer for c in self.tcp_connections.values()):
            raise TurnError(446)
        cid = self._new_connection_id()
        self.tcp_connections[cid] = TcpPeerConnection(
            cid, ft, peer, now + BIND_TIMEOUT, "connecting", msg, ident
        )
        alloc.permissions[peer[0]] = now + self.config.permission_lifetime
        self._due(min(now + BIND_TIMEOUT, alloc.permissions[peer[0]]))
        raise _Reply(ConnectPeer(cid, relay.handle, peer))

    def connect_result(self, connection_id: int, ok: bool, now: float) -> bytes | None:
        """The shell's TCP connect for :class:`ConnectPeer` finished: the Connect response
        (CONNECTION-ID, or 447) for the client's control connection."""
        conn = self.tcp_connections.get(connection_id)
        if conn is None or conn.request is None or conn.identity is None:
            return None
        if self.allocations.get(conn.five_tuple) is None:
            self.tcp_connections.pop(connection_id, None)
            return None
        if not ok:
            del self.tcp_connections[connection_id]
            return self._error(conn.request, 447, conn.identity)
        conn.state = "pending-bind"
        conn.expiry = now + BIND_TIMEOUT
        self._due(conn.expiry)
        self.stats.responses[0] += 1
        return self._sign(
            conn.request, MessageClass.SUCCESS, [ConnectionId(connection_id)], conn.identity
        )

    def peer_connected(self, ft: FiveTuple, peer: Addr, now: float) -> tuple[int, bytes] | None:
        """A peer connected to the TCP relay of allocation ``ft`` (RFC 6062 5.3): the new
        connection id and the ConnectionAttempt indication for the client, or None when the
        peer has no permission (close it)."""
        alloc = self.allocations.get(ft)
        if alloc is None or not alloc.tcp or not alloc.permitted(peer[0], now):
            self.stats.dropped["tcp-peer-refused"] += 1
            return None
        cid = self._new_connection_id()
        self.tcp_connections[cid] = TcpPeerConnection(
            cid, ft, peer, now + BIND_TIMEOUT, "pending-bind"
        )
        self._due(now + BIND_TIMEOUT)
        indication = encode_message(
            Method.CONNECTION_ATTEMPT,
            MessageClass.INDICATION,
            self.random_bytes(12),
            [ConnectionId(cid), XorPeerAddress(ipaddress.ip_address(peer[0]), peer[1])],
        )
        return cid, indication

    def _on_connection_bind(
        self, msg: Message, ft: FiveTuple, ident: Identity, now: float
    ) -> list[Attribute]:
        """RFC 6062 5.4: a new client connection asks to become the data connection."""
        if not ft.stream or ft in self.allocations:
            raise TurnError(400)
        cid_attr = msg.get(ConnectionId)
        conn = self.tcp_connections.get(cid_attr.connection_id) if cid_attr else None
        if conn is None or conn.state != "pending-bind":
            raise TurnError(400, "Unknown connection")
        alloc = self.allocations.get(conn.five_tuple)
        if alloc is None or alloc.username != ident.username:
            raise TurnError(441)
        conn.state = "bound"
        conn.expiry = float("inf")
        self.stats.responses[0] += 1
        response = self._sign(msg, MessageClass.SUCCESS, [], ident)
        raise _Reply(Bound(response, conn.connection_id))

    def tcp_connection_closed(self, connection_id: int) -> None:
        """The shell closed a peer TCP connection (either side hung up)."""
        self.tcp_connections.pop(connection_id, None)

    # ------------------------------------------------------------------ helpers
    def _delete(self, alloc: Allocation) -> None:
        if self.allocations.pop(alloc.five_tuple, None) is None:
            return
        if self.observer is not None:
            self.observer.allocation_deleted(alloc)
        self.per_account[alloc.account] -= 1
        if self.per_account[alloc.account] <= 0:
            del self.per_account[alloc.account]
        s = self.stats
        s.allocations_deleted += 1
        s.packets_to_peer += alloc.packets_to_peer
        s.bytes_to_peer += alloc.bytes_to_peer
        s.packets_to_client += alloc.packets_to_client
        s.bytes_to_client += alloc.bytes_to_client
        s.dropped["relay"] += alloc.dropped
        for relay in alloc.relays.values():
            self.allocator.release(relay.handle)
        if alloc.tcp:
            self._due(0.0)  # its peer connections are closed by the next sweep: run it now

    def _unauth_ok(self, ip: str, now: float) -> bool:
        bucket = self._unauth.get(ip)
        if bucket is None:
            if len(self._unauth) >= 100_000:
                self.stats.dropped["rate-limit-table-full"] += 1
                return False
            bucket = self._unauth[ip] = TokenBucket(
                self.config.unauth_rate, self.config.unauth_burst, now
            )
            if self._unauth_gc == _NEVER:
                self._unauth_gc = now + self._refill_time()
                self._due(self._unauth_gc)
        if bucket.take(1, now):
            return True
        self.stats.dropped["rate-limited"] += 1
        return False

    def _bounded(self, out: bytes, size: int) -> bytes | None:
        if len(out) > max(size, 20) * self.config.amplification_factor:
            self.stats.dropped["amplification"] += 1
            return None
        return out

    def _error(
        self,
        msg: Message,
        code: int,
        identity: Identity | None,
        *,
        reason: str | None = None,
        extra: Sequence[Attribute] = (),
    ) -> bytes:
        self.stats.responses[code] += 1
        attrs: list[Attribute] = [ErrorCodeAttr.of(code, reason), *extra]
        if identity is None:
            return encode_message(msg.method, MessageClass.ERROR, msg.transaction_id, attrs)
        return self._sign(msg, MessageClass.ERROR, attrs, identity)

    def _sign(
        self, msg: Message, cls: MessageClass, attrs: Sequence[Attribute], ident: Identity
    ) -> bytes:
        integrity = "sha256" if msg.get(MessageIntegritySha256) is not None else "sha1"
        return encode_message(
            msg.method,
            cls,
            msg.transaction_id,
            attrs,
            key=ident.key,
            integrity=integrity,
            fingerprint=msg.get(Fingerprint) is not None,
        )
