"""Send-side delay-based bandwidth estimation for one subscriber (sans-I/O), after
draft-ietf-rmcat-gcc-02 s5 and the trendline variant WebRTC ships.

Theory of operation. The SFU stamps every packet to a subscriber with a transport-wide
sequence number and remembers when it sent it and how big it was; the subscriber
reports when each arrived (TWCC feedback). :meth:`DelayBasedBwe.on_feedback` takes those
(send time, arrival time, size) results in sequence order:

1. *Inter-arrival*: packets sent within 5 ms of a group's first packet form one group;
   for consecutive groups, d = (arrival delta) - (send delta) is how much the path's
   queue grew between them.
2. *Trendline*: d is accumulated, smoothed (0.9) and the slope of the last 20 smoothed
   values against arrival time is the queueing-delay trend; scaled by min(n, 60) * 4.
3. *Overuse detector*: the scaled trend against an adaptive threshold (12.5 ms to start,
   6..600, rising slowly and falling fast): above it for 10 ms and still rising is
   *overuse*, below its negative *underuse*, else *normal*.
4. *AIMD rate control*: overuse multiplies the estimate by 0.85 of the acknowledged rate
   (at most once per 200 ms), underuse holds, normal increases it by 8 %/s (or, near a
   capacity learnt at earlier overuses, by about one packet per response time) and never
   above 1.5 x the acknowledged rate + 10 kbit/s.

Because the estimate cannot grow past what is actually sent, a subscriber held on a low
layer would never climb back: :class:`Prober` decides when to send extra (RTX
retransmissions of recent packets) at a target rate; if the path carries it without
overuse, :meth:`DelayBasedBwe.on_probe_result` lifts the estimate to the rate delivered.
Times are seconds (send times: the SFU's monotonic clock; arrival times: the receiver's
clock, only differences matter), sizes bytes, rates bits/s.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass

BURST = 0.005  # packets sent within this of a group's first belong to the group
WINDOW = 20  # trendline regression window (deltas)
SMOOTHING = 0.9
GAIN = 4.0
K_UP, K_DOWN = 0.0087, 0.039
OVERUSE_TIME = 0.010
BETA = 0.85
DECREASE_INTERVAL = 0.2
ACKED_WINDOW = 0.5


class Usage(enum.Enum):
    NORMAL = "normal"
    OVERUSE = "overuse"
    UNDERUSE = "underuse"


@dataclass(frozen=True, slots=True)
class PacketResult:
    """One packet the subscriber acknowledged: when sent, when it arrived, its size."""

    send_time: float
    arrival_time: float
    size: int


class InterArrival:
    """Groups packets by send time; yields (send delta, arrival delta) between groups."""

    def __init__(self) -> None:
        self._first_send = -1.0
        self._last_send = 0.0
        self._last_arrival = 0.0
        self._prev: tuple[float, float] | None = None  # (last send, last arrival)

    def add(self, send: float, arrival: float) -> tuple[float, float, float] | None:
        """Feed one packet; (send delta, arrival delta, arrival) when a group closed."""
        if self._first_send < 0:
            self._first_send, self._last_send, self._last_arrival = send, send, arrival
            return None
        if send < self._first_send:
            return None  # reordered from an earlier group: ignored
        if send - self._first_send <= BURST:
            self._last_send = max(self._last_send, send)
            self._last_arrival = max(self._last_arrival, arrival)
            return None
        closed = (self._last_send, self._last_arrival)
        out = None
        if self._prev is not None:
            out = (closed[0] - self._prev[0], closed[1] - self._prev[1], closed[1])
        self._prev = closed
        self._first_send, self._last_send, self._last_arrival = send, send, arrival
        return out


class TrendlineDetector:
    """Trendline filter and adaptive-threshold overuse detector (times in ms inside)."""

    def __init__(self) -> None:
        self.threshold = 12.5
        self.usage = Usage.NORMAL
        self._deltas = 0
        self._first_arrival = -1.0
        self._accumulated = 0.0
        self._smoothed = 0.0
        self._history: deque[tuple[float, float]] = deque(maxlen=WINDOW)
        self._trend = 0.0
        self._prev_trend = 0.0
        self._overusing_for = -1.0
        self._overuse_count = 0
        self._last_update = -1.0
        self.modified_trend = 0.0

    def update(self, send_delta: float, arrival_delta: float, arrival: float) -> Usage:
        """Feed one group delta (seconds); return the usage it implies."""
        send_ms, arrival_ms, now_ms = send_delta * 1e3, arrival_delta * 1e3, arrival * 1e3
        self._deltas = min(self._deltas + 1, 1000)
        if self._first_arrival < 0:
            self._first_arrival = now_ms
        self._accumulated += arrival_ms - send_ms
        self._smoothed = SMOOTHING * self._smoothed + (1 - SMOOTHING) * self._accumulated
        self._history.append((now_ms - self._first_arrival, self._smoothed))
        if len(self._history) == WINDOW:
            slope = _slope(self._history)
            if slope is not None:
                self._trend = slope
        self._detect(send_ms, now_ms)
        return self.usage

    def _detect(self, send_ms: float, now_ms: float) -> None:
        if self._deltas < 2:
            self.usage = Usage.NORMAL
            return
        trend = min(self._deltas, 60) * self._trend * GAIN
        self.modified_trend = trend
        if trend > self.threshold:
            if self._overusing_for < 0:
                self._overusing_for = send_ms / 2
            else:
                self._overusing_for += send_ms
            self._overuse_count += 1
            if (
                self._overusing_for > OVERUSE_TIME * 1e3
                and self._overuse_count > 1
                and self._trend >= self._prev_trend
            ):
                self._overusing_for = 0
                self._overuse_count = 0
                self.usage = Usage.OVERUSE
        elif trend < -self.threshold:
            self._overusing_for = -1
            self._overuse_count = 0
            self.usage = Usage.UNDERUSE
        else:
            self._overusing_for = -1
            self._overuse_count = 0
            self.usage = Usage.NORMAL
        self._prev_trend = self._trend
        self._adapt(trend, now_ms)

    def _adapt(self, trend: float, now_ms: float) -> None:
        if self._last_update < 0:
            self._last_update = now_ms
        if abs(trend) > self.threshold + 15:  # a spike: do not chase it
            self._last_update = now_ms
            return
        k = K_DOWN if abs(trend) < self.threshold else K_UP
        elapsed = min(now_ms - self._last_update, 100.0)
        self.threshold += k * (abs(trend) - self.threshold) * elapsed
        self.threshold = min(max(self.threshold, 6.0), 600.0)
        self._last_update = now_ms


def _slope(points: deque[tuple[float, float]]) -> float | None:
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    num = sum((x - mean_x) * (y - mean_y) for x, y in points)
    den = sum((x - mean_x) ** 2 for x, _ in points)
    return None if den == 0 else num / den


class AckedRate:
    """Bits/s acknowledged over the last ``ACKED_WINDOW`` seconds of arrivals."""

    def __init__(self) -> None:
        self._packets: deque[tuple[float, int]] = deque()
        self._bytes = 0

    def add(self, arrival: float, size: int) -> None:
        self._packets.append((arrival, size))
        self._bytes += size
        while self._packets and arrival - self._packets[0][0] > ACKED_WINDOW:
            self._bytes -= self._packets.popleft()[1]

    def rate(self) -> float | None:
        if len(self._packets) < 2:
            return None
        span = max(self._packets[-1][0] - self._packets[0][0], 0.1)
        return self._bytes * 8 / span


class DelayBasedBwe:
    """Trendline + overuse detector + AIMD: :attr:`estimate` in bits/s."""

    def __init__(self, initial: float, *, floor: float = 50_000, ceiling: float = 50e6) -> None:
        self.estimate = float(initial)
        self.floor = floor
        self.ceiling = ceiling
        self.usage = Usage.NORMAL
        self.overuse_at = -1e9  # sender clock of the last overuse signal
        self._arrival = InterArrival()
        self._detector = TrendlineDetector()
        self.acked = AckedRate()
        self._increasing = False
        self._last_change = -1.0
        self._last_decrease = -1e9
        self._capacity: float | None = None  # acked rate at overuse (EMA)
        self._capacity_var = 0.4

    @property
    def threshold(self) -> float:
        return self._detector.threshold

    def on_feedback(self, results: list[PacketResult], now: float) -> float:
        """Apply acknowledged packets (in sequence order) at sender time ``now``."""
        usage = self.usage
        overused = False
        for packet in results:
            self.acked.add(packet.arrival_time, packet.size)
            delta = self._arrival.add(packet.send_time, packet.arrival_time)
            if delta is not None:
                usage = self._detector.update(*delta)
                overused = overused or usage is Usage.OVERUSE
        self.usage = usage
        if overused:
            self.overuse_at = now
        self._control(usage, now)
        return self.estimate

    def _control(self, usage: Usage, now: float) -> None:
        acked = self.acked.rate()
        if usage is Usage.OVERUSE:
            self._increasing = False
            if now - self._last_decrease >= DECREASE_INTERVAL and acked is not None:
                self._learn_capacity(acked)
                lowered = BETA * acked
                if lowered < self.estimate:
                    self.estimate = lowered
                self._last_decrease = now
            self._last_change = now
        elif usage is Usage.UNDERUSE:
            self._increasing = False
            self._last_change = now
        else:
            if not self._increasing:
                self._increasing = True
                self._last_change = now
            elapsed = min(max(now - self._last_change, 0.0), 1.0)
            self._last_change = now
            limit = math.inf if acked is None else 1.5 * acked + 10_000
            if self._capacity is not None and acked is not None:
                spread = 3e3 * math.sqrt(self._capacity_var * self._capacity / 1e3)
                if acked > self._capacity + spread:
                    self._capacity = None  # well past the old capacity: forget it
            if self.estimate < limit:
                if self._capacity is not None:
                    increase = self._additive_rate() * elapsed
                else:
                    increase = max(self.estimate * (1.08**elapsed - 1), 1_000 * elapsed)
                self.estimate = min(self.estimate + increase, limit)
        self.estimate = min(max(self.estimate, self.floor), self.ceiling)

    def _additive_rate(self) -> float:
        """Bits/s per second near capacity: about one packet per 300 ms response time."""
        bits_per_frame = self.estimate / 30
        packets = max(1.0, math.ceil(bits_per_frame / (1200 * 8)))
        return max(4_000.0, bits_per_frame / packets / 0.3)

    def _learn_capacity(self, acked: float) -> None:
        """Exponential average of the acknowledged rate at overuse, and its normalised
        variance (kbit/s inside, as WebRTC's link capacity estimator)."""
        if self._capacity is None:
            self._capacity = acked
            return
        error = (acked - self._capacity) / 1e3
        self._capacity += 0.05 * error * 1e3
        norm = max(self._capacity / 1e3, 1.0)
        self._capacity_var = min(max(0.95 * self._capacity_var + 0.05 * error**2 / norm, 0.4), 2.5)

    def on_probe_result(self, rate: float, now: float) -> None:
        """A probe delivered ``rate`` without overuse: the path carries at least that."""
        if rate > self.estimate and self.usage is not Usage.OVERUSE:
            self.estimate = min(rate, self.ceiling)
            self._capacity = None
            self._last_change = now


class Prober:
    """When to send probe traffic, and judging a probe from acknowledged packets.

    A probe is wanted when the subscriber's layers would use more than the estimate,
    nothing overused for ``quiet`` seconds and the back-off since the last probe has
    passed. It lasts ``duration`` seconds at ``target`` bits/s in total (media + probe:
    twice the estimate at most, so a probe into a narrow path costs one short queue);
    then the acknowledged packets sent during it give the delivered rate. A probe
    that ends in overuse doubles the back-off (up to ``max_backoff``).
    """

    def __init__(
        self, *, duration: float = 0.5, quiet: float = 2.0, backoff: float = 2.0,
        max_backoff: float = 8.0,
    ) -> None:  # fmt: skip
        self.duration = duration
        self.quiet = quiet
        self.min_backoff = backoff
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.target = 0.0
        self.media_rate = 0.0
        self.started = -1e9
        self.ended = -1e9
        self.active = False
        self.probes = 0
        self.successes = 0
        self._acked: list[tuple[float, float, int]] = []

    def wanted(self, desired: float, bwe: DelayBasedBwe, now: float) -> bool:
        """Start a probe towards ``desired`` bits/s if it is time to."""
        if self.active or desired <= bwe.estimate * 1.05:
            return False
        if now - bwe.overuse_at < self.quiet or now - self.ended < self.backoff:
            return False
        self.active = True
        self.target = min(desired * 1.2, bwe.estimate * 2)
        self.media_rate = bwe.acked.rate() or 0.0  # what flows anyway (not the probe)
        self.started = now
        self._acked = []
        self.probes += 1
        return True

    def budget(self, elapsed: float, now: float) -> int:
        """Probe bytes to send now (0 when not probing): what the media rate at the start
        lacks of the target over ``elapsed`` seconds."""
        if not self.active or now - self.started > self.duration:
            return 0
        return max(0, int((self.target - self.media_rate) * elapsed / 8))

    def on_acked(self, packet: PacketResult) -> None:
        if self.active and packet.send_time >= self.started:
            self._acked.append((packet.send_time, packet.arrival_time, packet.size))

    def finish(self, bwe: DelayBasedBwe, now: float) -> float | None:
        """After the probe (and its feedback, ~0.3 s): the delivered rate, or None."""
        if not self.active or now - self.started < self.duration + 0.3:
            return None
        self.active = False
        self.ended = now
        during = [a for a in self._acked if a[0] <= self.started + self.duration]
        self._acked = []
        failed = bwe.overuse_at >= self.started or len(during) < 5
        if failed:
            self.backoff = min(self.backoff * 2, self.max_backoff)
            return None
        sent_span = max(during[-1][0] - during[0][0], 1e-3)
        arrivals = sorted(a[1] for a in during)
        arrival_span = max(arrivals[-1] - arrivals[0], 1e-3)
        size = sum(a[2] for a in during[:-1])
        rate = min(size * 8 / sent_span, size * 8 / arrival_span)
        self.backoff = self.min_backoff
        self.successes += 1
        bwe.on_probe_result(rate, now)
        return rate
