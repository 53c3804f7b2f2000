"""Rate limits, time passed in: a token bucket per device connection, the growing
delays that throttle sign-ins and sign-ups per source address and per handle, and the
limit on work in progress that refuses excess load at once."""

from __future__ import annotations

from dataclasses import dataclass

from visavis.protocol.ratelimit import TokenBucket


def key_bucket(max_participants: int, now: float) -> TokenBucket:
    """The bucket for a device's end-to-end key messages (``call.e2ee``), sized by call.

    Key agreement is bursty by design: joining a call of n costs the newcomer an announce
    and a key message to each of the n - 1 others, and a leave costs every remaining
    sender a fresh key to each other. Under the device's general bucket (60, then 20/s)
    a 32-person call loses keys (and so media) whenever people come and go together;
    this one banks four messages per possible peer and refills two per peer per second.
    """
    return TokenBucket(2.0 * max_participants, 4 * max_participants, now)


@dataclass(slots=True)
class Buckets:
    """A device connection's rate limits: one for key messages, one for the rest."""

    messages: TokenBucket
    keys: TokenBucket

    def of(self, kind: object) -> TokenBucket:
        return self.keys if kind == "call.e2ee" else self.messages


class ConcurrencyLimit:
    """At most ``limit`` units of work at once; one more is refused, not queued.

    Under more load than the database can serve, queued requests would wait for a pool
    connection until they time out (seconds later, as "internal errors"); refusing the
    excess at once keeps the admitted requests fast and tells the others to retry.
    """

    __slots__ = ("active", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def enter(self) -> bool:
        """Take a slot if one is free; the caller must :meth:`leave` after."""
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def leave(self) -> None:
        self.active -= 1


@dataclass(slots=True)
class _Strikes:
    count: float
    stamp: float
    blocked_until: float


class Backoff:
    """Growing delays for one kind of costly attempt (a failed sign-in, a sign-up), by key.

    Each :meth:`strike` adds one to the key's count, which leaks away at one per ``leak``
    seconds. While the count is within ``free`` nothing waits; past it the key must wait
    ``base * 2**(count - free - 1)`` seconds (at most ``ceiling``) before its next attempt,
    and :meth:`wait` says how long is left. :meth:`forgive` clears a key (a successful
    sign-in clears its handle). At most ``max_keys`` keys are kept: when full, keys whose
    count has leaked away go first, then the oldest (a flood of addresses cannot grow memory).
    """

    def __init__(
        self,
        free: int,
        *,
        leak: float = 60.0,
        base: float = 1.0,
        ceiling: float = 900.0,
        max_keys: int = 100_000,
    ) -> None:
        self.free = free
        self.leak = leak
        self.base = base
        self.ceiling = ceiling
        self.max_keys = max_keys
        self._keys: dict[str, _Strikes] = {}

    def _count(self, strikes: _Strikes, now: float) -> float:
        return max(0.0, strikes.count - (now - strikes.stamp) / self.leak)

    def wait(self, key: str, now: float) -> float:
        """Seconds ``key`` must still wait before trying again (0: go ahead)."""
        strikes = self._keys.get(key)
        return 0.0 if strikes is None else max(0.0, strikes.blocked_until - now)

    def strike(self, key: str, now: float) -> float:
        """Count one attempt against ``key``; returns the delay it now has to wait."""
        strikes = self._keys.get(key)
        if strikes is None:
            if len(self._keys) >= self.max_keys:
                self._evict(now)
            strikes = self._keys[key] = _Strikes(0.0, now, now)
        strikes.count = self._count(strikes, now) + 1.0
        strikes.stamp = now
        over = strikes.count - self.free
        delay = 0.0 if over <= 0 else min(self.ceiling, self.base * 2 ** (over - 1))
        strikes.blocked_until = now + delay
        return delay

    def forgive(self, key: str) -> None:
        self._keys.pop(key, None)

    def _evict(self, now: float) -> None:
        idle = [k for k, s in self._keys.items() if s.blocked_until <= now]
        for key in [k for k in idle if not self._count(self._keys[k], now)]:
            del self._keys[key]
        while len(self._keys) >= self.max_keys:
            del self._keys[next(iter(self._keys))]

    def __len__(self) -> int:
        return len(self._keys)


class SignInThrottle:
    """Who may try a password now: failed sign-ins count per source address and per
    handle, sign-ups per source address (each costs a password hash either way).

    ``login_wait``/``signup_wait`` return ``(scope, seconds)`` when the attempt must wait
    (scope ``"address"`` or ``"handle"``), else None; report outcomes with the other verbs.
    """

    def __init__(
        self, *, failures_per_address: int, failures_per_handle: int, signups_per_address: int
    ) -> None:
        # Counts leak at 10 a minute per address (a shared NAT's users mistype too) and at
        # one a minute per handle (guessing one account's password stays slow).
        self.address_failures = Backoff(failures_per_address, leak=6.0)
        self.handle_failures = Backoff(failures_per_handle, leak=60.0)
        self.address_signups = Backoff(signups_per_address, leak=6.0)

    def login_wait(self, address: str, handle: str, now: float) -> tuple[str, float] | None:
        for scope, backoff, key in (
            ("address", self.address_failures, address),
            ("handle", self.handle_failures, handle),
        ):
            wait = backoff.wait(key, now)
            if wait > 0:
                return scope, wait
        return None

    def login_failed(self, address: str, handle: str, now: float) -> None:
        self.address_failures.strike(address, now)
        self.handle_failures.strike(handle, now)

    def login_succeeded(self, handle: str) -> None:
        self.handle_failures.forgive(handle)

    def signup_wait(self, address: str, now: float) -> tuple[str, float] | None:
        wait = self.address_signups.wait(address, now)
        return ("address", wait) if wait > 0 else None

    def signed_up(self, address: str, now: float) -> None:
        self.address_signups.strike(address, now)
