"""A subscriber's downlink bandwidth estimate from its RTCP feedback (sans-I/O).

The delay-based part is the SFU's own when the subscriber sends transport-wide CC
feedback (:mod:`visavis.sfu.gcc`, fed through :meth:`on_delay_based`); otherwise it is
the receiver's own estimate from REMB. Receiver reports give loss. The estimate is the
freshest delay-based value (TWCC first, then REMB, or ``initial`` before any), cut by
loss as in the loss-based part of GCC (draft-ietf-rmcat-gcc s6): above 10 % loss
multiply by (1 - 0.5 * loss). A value older than ``stale_after`` seconds is ignored.
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
        self._remb: float | None = None
        self._remb_at = 0.0
        self._delay: float | None = None
        self._delay_at = 0.0
        self._loss_factor = 1.0

    def on_remb(self, bitrate: float, now: float) -> None:
        """Record a REMB value in bits/s."""
        self._remb = float(bitrate)
        self._remb_at = now

    def on_delay_based(self, bitrate: float, now: float) -> None:
        """Record the SFU's own delay-based estimate (from TWCC feedback) in bits/s."""
        self._delay = float(bitrate)
        self._delay_at = now

    def on_loss(self, fraction_lost: float, now: float) -> None:
        """Record the fraction (0..1) of packets lost in the last report interval."""
        if fraction_lost > 0.1:
            self._loss_factor = max(0.3, self._loss_factor * (1.0 - 0.5 * fraction_lost))
        elif fraction_lost < 0.02:
            self._loss_factor = min(1.0, self._loss_factor * 1.08)

    def estimate(self, now: float) -> float:
        """Available downlink bits/s."""
        base = self.initial
        if self._delay is not None and now - self._delay_at <= self.stale_after:
            base = self._delay
        elif self._remb is not None and now - self._remb_at <= self.stale_after:
            base = self._remb
        return max(self.floor, base * self._loss_factor)
