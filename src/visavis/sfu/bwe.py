"""A subscriber's downlink bandwidth estimate from its RTCP feedback (sans-I/O).

REMB gives the receiver's own delay-based estimate; receiver reports give loss. The
estimate is the latest REMB (or ``initial`` before any), cut by loss as in the
loss-based part of GCC (RFC draft-ietf-rmcat-gcc s6): above 10 % loss multiply by
(1 - 0.5 * loss). A REMB older than ``stale_after`` seconds is ignored.
"""

from __future__ import annotations


class BandwidthEstimator:
    """Call :meth:`on_remb` / :meth:`on_loss` as feedback arrives, :meth:`estimate` to read."""

    def __init__(
        self, *, initial: float = 1_500_000, floor: float = 100_000, stale_after: float = 5.0
    ) -> None:
        self.initial = initial
        self.floor = floor
        self.stale_after = stale_after
        self._remb: float | None = None
        self._remb_at = 0.0
        self._loss_factor = 1.0

    def on_remb(self, bitrate: float, now: float) -> None:
        """Record a REMB value in bits/s."""
        self._remb = float(bitrate)
        self._remb_at = now

    def on_loss(self, fraction_lost: float, now: float) -> None:
        """Record the fraction (0..1) of packets lost in the last report interval."""
        if fraction_lost > 0.1:
            self._loss_factor = max(0.3, self._loss_factor * (1.0 - 0.5 * fraction_lost))
        elif fraction_lost < 0.02:
            self._loss_factor = min(1.0, self._loss_factor * 1.08)

    def estimate(self, now: float) -> float:
        """Available downlink bits/s."""
        base = self.initial
        if self._remb is not None and now - self._remb_at <= self.stale_after:
            base = self._remb
        return max(self.floor, base * self._loss_factor)
