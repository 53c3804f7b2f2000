"""A subscriber's downlink bandwidth estimate from its RTCP feedback (sans-I/O).

The delay-based part is the SFU's own when the subscriber sends transport-wide CC
feedback (:mod:`visavis.sfu.gcc`, fed through :meth:`on_delay_based`); otherwise it is
the receiver's own estimate from REMB. Receiver reports give loss. The estimate is the
freshest delay-based value (TWCC first, then REMB, or ``initial`` before any), cut by
loss as in the loss-based part of GCC (draft-ietf-rmcat-gcc s6): above 10 % loss
multiply by (1 - 0.5 * loss). A value older than ``stale_after`` seconds is ignored.

A REMB is the maximum for the SSRCs it lists. aiortc runs one estimator per receiving
m-line and sends one REMB per video slot, each listing that slot's SSRCs, so REMBs
with disjoint SSRC lists add up; a new one replaces those it shares an SSRC with (one
listing none speaks for the whole transport and replaces all).

Without TWCC the SFU cannot measure the path, and a receive-side estimator reports at
most about 1.5 x what it receives: :class:`RembProber` pads a REMB subscriber's slots
so that its REMB can climb back after it was moved to a small layer.
"""

from __future__ import annotations


class BandwidthEstimator:
    """Call :meth:`on_remb` / :meth:`on_delay_based` / :meth:`on_loss` as feedback
    arrives, :meth:`estimate` to read."""

    def __init__(
        self, *, initial: float = 1_500_000, floor: float = 100_000, stale_after: float = 5.0
    ) -> None:
        self.initial = initial
        self.floor = floor
        self.stale_after = stale_after
        self._remb: dict[frozenset[int], tuple[float, float]] = {}  # ssrcs -> (bits/s, at)
        self.congested_at = -1e9  # last REMB that fell by over 10 %, or loss over 10 %
        self._held: float | None = None  # REMB path: lowered by a falling REMB only
        self._delay: float | None = None
        self._delay_at = 0.0
        self._loss_factor = 1.0

    def on_remb(self, bitrate: float, now: float, ssrcs: tuple[int, ...] = ()) -> None:
        """Record a REMB value in bits/s for ``ssrcs`` (none: the whole transport).

        Without TWCC the estimate is the REMB total as held: it follows a REMB that
        rises, and comes down only on a congestion signal. Receive-side estimators
        (libwebrtc's AIMD, aiortc's port of it) move their value in two ways only: up
        by at most 8 %/s, or, on overuse, straight to 0.85 x what they received. So a
        value under 0.9 x the one it replaces, or one over 1.2 x it within a second
        while below the held estimate (a reset to what arrived: the REMB had lagged a
        probe's step-up), is overuse: the held estimate drops to the REMB total."""
        key = frozenset(ssrcs)
        replaced = [
            k for k in self._remb
            if (not key or not k or k & key) and now - self._remb[k][1] <= self.stale_after
        ]  # fmt: skip
        before = sum(self._remb[k][0] for k in replaced)
        before_at = max((self._remb[k][1] for k in replaced), default=-1e9)
        for k in [k for k in self._remb if not key or not k or k & key]:
            del self._remb[k]
        self._remb[key] = (float(bitrate), now)
        total = self.remb(now) or 0.0
        fell = before > 0 and bitrate < 0.9 * before
        reset = (
            before > 0
            and bitrate > 1.2 * before
            and now - before_at <= 1.0
            and self._held is not None
            and total < self._held
        )
        if self._held is None or fell or reset:
            if self._held is not None:
                self.congested_at = now
            self._held = total
        else:
            self._held = max(self._held, total)

    def on_probe_result(self, rate: float, now: float) -> None:
        """A REMB probe (:class:`RembProber`) carried ``rate`` without congestion."""
        if self._held is not None:
            self._held = max(self._held, rate)

    def on_delay_based(self, bitrate: float, now: float) -> None:
        """Record the SFU's own delay-based estimate (from TWCC feedback) in bits/s."""
        self._delay = float(bitrate)
        self._delay_at = now

    def on_loss(self, fraction_lost: float, now: float) -> None:
        """Record the fraction (0..1) of packets lost in the last report interval."""
        if fraction_lost > 0.1:
            self.congested_at = now
            self._loss_factor = max(0.3, self._loss_factor * (1.0 - 0.5 * fraction_lost))
        elif fraction_lost < 0.02:
            self._loss_factor = min(1.0, self._loss_factor * 1.08)

    def remb(self, now: float) -> float | None:
        """The sum of the fresh REMB values (None: none fresh)."""
        fresh = [v for v, at in self._remb.values() if now - at <= self.stale_after]
        return sum(fresh) if fresh else None

    def estimate(self, now: float) -> float:
        """Available downlink bits/s."""
        base = self.initial
        remb = self.remb(now)
        if self._delay is not None and now - self._delay_at <= self.stale_after:
            base = self._delay
        elif remb is not None and self._held is not None:
            base = self._held
        return max(self.floor, base * self._loss_factor)


class RembProber:
    """When to probe a subscriber whose only bandwidth feedback is REMB, and at what rate.

    A receive-side estimator (aiortc's, as libwebrtc's REMB) starts from what it
    receives, grows about 8 %/s and reports at most about 1.5 x what it receives: a
    subscriber moved to a small layer (a thumbnail, a congested moment) reports a small
    REMB for long (aiortc: 35 s from a thumbnail's 40 kbit/s to a 500 kbit/s layer), and
    the allocator keeps it small. So the SFU steps it up itself: a probe starts when its
    layers want over 1.05 x the estimate, nothing was congested (a REMB that fell, loss
    over 10 %: :attr:`BandwidthEstimator.congested_at`) for ``quiet`` s and the back-off
    has passed. For ``duration`` s the SFU sends media + RTX padding at ``target`` =
    min(1.2 x what the layers want, 2 x the estimate); if no congestion signal came by
    ``grace`` s later, the path carried it and :meth:`finish` returns it (the estimate
    steps up to it; the next probe may start at once). A congested probe doubles the
    back-off (``backoff`` up to ``max_backoff``).
    """

    def __init__(
        self, *, duration: float = 1.5, grace: float = 0.6, quiet: float = 2.0,
        backoff: float = 2.0, max_backoff: float = 16.0,
    ) -> None:  # fmt: skip
        self.duration = duration
        self.grace = grace
        self.quiet = quiet
        self.min_backoff = backoff
        self.backoff = 0.0
        self.max_backoff = max_backoff
        self.active = False
        self.target = 0.0
        self.started = -1e9
        self.ended = -1e9
        self.probes = 0
        self.successes = 0

    def step(self, desired: float, estimate: float, congested_at: float, now: float) -> float:
        """The total bits/s to send this subscriber now (0: not probing)."""
        if not self.active:
            if desired <= estimate * 1.05:
                return 0.0
            if now - congested_at < self.quiet or now - self.ended < self.backoff:
                return 0.0
            self.active = True
            self.started = now
            self.target = min(desired * 1.2, estimate * 2)
            self.probes += 1
        return self.target if now - self.started <= self.duration else 0.0

    def finish(self, congested_at: float, now: float) -> float | None:
        """After the probe and its grace: the rate the path carried, or None."""
        if not self.active or now - self.started < self.duration + self.grace:
            return None
        self.active = False
        self.ended = now
        if congested_at >= self.started:
            self.backoff = min(max(self.backoff * 2, self.min_backoff), self.max_backoff)
            return None
        self.backoff = 0.0
        self.successes += 1
        return self.target
