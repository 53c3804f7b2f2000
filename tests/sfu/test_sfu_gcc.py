"""The delay-based estimator (:mod:`visavis.sfu.gcc`) on synthetic feedback: a steady
path lets it grow (no faster than the acknowledged rate allows), a queue that builds
(one-way delay ramping up) is detected as overuse and cuts the estimate to about 0.85 of
what gets through, a draining queue holds it, and once the delay is flat again it
recovers; probes lift it only when the path carries them."""

from __future__ import annotations

from visavis.sfu.bwe import BandwidthEstimator, RembProber
from visavis.sfu.gcc import DelayBasedBwe, PacketResult, Prober, Usage

SIZE = 1200  # bytes per packet
GAP = 0.010  # one packet every 10 ms: 960 kbit/s


class Path:
    """Packets every ``GAP`` s; the one-way delay follows ``delay(t)``; feedback every
    100 ms of everything sent in that time."""

    def __init__(self, bwe: DelayBasedBwe) -> None:
        self.bwe = bwe
        self.t = 0.0
        self.usages: list[Usage] = []

    def run(self, seconds: float, delay: object, size: int = SIZE) -> None:
        end = self.t + seconds
        while self.t < end - 1e-9:
            batch = []
            for _ in range(10):
                batch.append(PacketResult(self.t, 5.0 + self.t + delay(self.t), size))  # type: ignore[operator]
                self.t += GAP
            self.bwe.on_feedback(batch, self.t + 0.02)
            self.usages.append(self.bwe.usage)


def test_steady_path_grows_but_not_past_what_gets_through() -> None:
    bwe = DelayBasedBwe(300_000)
    path = Path(bwe)
    path.run(3.0, lambda t: 0.02)
    assert set(path.usages) == {Usage.NORMAL}
    # 8 %/s from 300 kbit/s for ~3 s
    assert 360_000 < bwe.estimate < 400_000
    path.run(30.0, lambda t: 0.02)
    acked = bwe.acked.rate()
    assert acked is not None and 950_000 < acked < 1_000_000
    assert bwe.estimate <= 1.5 * acked * 1.01 + 10_000  # the window holds 50 or 51 packets
    assert bwe.estimate > 1.4 * acked  # it got there


def test_ramping_delay_is_overuse_and_recovery_follows() -> None:
    bwe = DelayBasedBwe(3_000_000)
    path = Path(bwe)
    path.run(2.0, lambda t: 0.02)
    assert bwe.usage is Usage.NORMAL and bwe.estimate == 3_000_000  # above 1.5 x acked: held
    # The bottleneck is slower than the sender: +1 ms of queue per 10 ms packet.
    start = path.t
    path.run(1.0, lambda t: 0.02 + max(0.0, t - start) * 0.1)
    assert Usage.OVERUSE in path.usages[-10:]
    detected = path.usages[-10:].index(Usage.OVERUSE)
    assert detected <= 6  # within 0.6 s of the queue starting to build
    acked = bwe.acked.rate()
    assert acked is not None
    assert bwe.estimate < 0.86 * 960_000  # cut to ~0.85 x what got through
    low = bwe.estimate
    # The queue drains (delay falls back): underuse, the estimate holds.
    peak = path.t
    path.run(0.5, lambda t: 0.12 - (t - peak) * 0.15)
    assert Usage.UNDERUSE in path.usages[-5:]
    assert bwe.estimate <= low
    # Flat again: normal, and it climbs.
    path.run(3.0, lambda t: 0.045)
    assert path.usages[-1] is Usage.NORMAL
    assert bwe.estimate > low + 50_000  # additive near the capacity learnt at overuse


def test_jitter_without_a_trend_is_not_overuse() -> None:
    bwe = DelayBasedBwe(500_000)
    path = Path(bwe)
    path.run(10.0, lambda t: 0.02 + (0.004 if int(t * 100) % 3 == 0 else 0.0))
    assert Usage.OVERUSE not in path.usages


def test_probe_lifts_the_estimate_only_when_the_path_carries_it() -> None:
    bwe = DelayBasedBwe(300_000)
    prober = Prober()
    path = Path(bwe)
    path.run(3.0, lambda t: 0.02, size=300)  # 240 kbit/s of media, flat
    assert not prober.wanted(200_000, bwe, path.t)  # the estimate covers it
    assert prober.wanted(2_000_000, bwe, path.t)  # layers that want more: probe
    assert prober.target == min(2_000_000 * 1.2, bwe.estimate * 2)
    assert prober.budget(0.1, path.t) == int((prober.target - prober.media_rate) * 0.1 / 8) > 0
    start = path.t
    # The probe's packets (media + probe: 1200-byte packets every 2 ms) all get through.
    t = start
    while t < start + prober.duration:
        result = PacketResult(t, 5.0 + t + 0.02, SIZE)
        prober.on_acked(result)
        bwe.on_feedback([result], t)
        t += 0.002
    assert prober.finish(bwe, start + 0.1) is None  # too early: feedback still due
    rate = prober.finish(bwe, start + prober.duration + 0.35)
    assert rate is not None and 4_500_000 < rate < 5_000_000
    assert bwe.estimate == rate and prober.successes == 1
    # A probe during which the path overused fails and backs off.
    assert not prober.wanted(9_000_000, bwe, start + 1.0)  # too soon after the last
    later = start + 10.0
    assert prober.wanted(9_000_000, bwe, later)
    bwe.overuse_at = later + 0.2
    before = bwe.estimate
    assert prober.finish(bwe, later + prober.duration + 0.35) is None
    assert bwe.estimate == before and prober.backoff == 2 * prober.min_backoff


def test_delay_based_estimate_takes_precedence_over_remb() -> None:
    bwe = BandwidthEstimator(initial=1_000_000)
    bwe.on_remb(5_000_000, 0.0)
    assert bwe.estimate(1.0) == 5_000_000
    bwe.on_delay_based(400_000, 1.0)
    assert bwe.estimate(2.0) == 400_000
    assert bwe.estimate(7.0) == 1_000_000  # both stale: the initial value
    bwe.on_loss(0.5, 7.0)
    assert bwe.estimate(7.0) == 750_000


def test_remb_per_ssrc_list_adds_up_and_a_falling_one_is_congestion() -> None:
    """aiortc sends one REMB per video slot, each for its own SSRCs: they add up; a new
    one replaces those it shares an SSRC with; a fall of over 10 % is congestion."""
    bwe = BandwidthEstimator(initial=1_000_000)
    bwe.on_remb(300_000, 0.0, (1, 2))
    bwe.on_remb(200_000, 0.1, (3,))
    assert bwe.estimate(0.2) == 500_000
    bwe.on_remb(320_000, 0.5, (1,))  # same slot (its RTX SSRC not seen yet): replaced
    assert bwe.remb(0.6) == 520_000 and bwe.congested_at < 0
    bwe.on_remb(150_000, 1.0, (3,))  # slot 3's receiver overused
    assert bwe.congested_at == 1.0 and bwe.estimate(1.1) == 470_000
    assert bwe.estimate(7.0) == 1_000_000  # all stale: the initial value


def test_held_remb_estimate_steps_up_by_probes_and_drops_on_a_reset() -> None:
    """The estimate follows a rising REMB, keeps a probe's step-up while the REMB lags
    below it (growing at most 8 %/s), and drops when the REMB jumps to what arrived."""
    bwe = BandwidthEstimator(initial=1_000_000, floor=10_000)
    bwe.on_remb(60_000, 0.0, (1,))  # a thumbnail's receiver
    assert bwe.estimate(0.0) == 60_000
    bwe.on_probe_result(400_000, 1.0)
    bwe.on_remb(64_000, 1.5, (1,))  # growing slowly: the step-up stands
    assert bwe.estimate(1.5) == 400_000 and bwe.congested_at < 0
    bwe.on_remb(340_000, 2.0, (1,))  # 0.85 x what arrived: it overused
    assert bwe.congested_at == 2.0 and bwe.estimate(2.0) == 340_000
    bwe.on_remb(900_000, 9.0, (1,))  # long after (stale before): a plain rise
    assert bwe.estimate(9.0) == 900_000 and bwe.congested_at == 2.0


def test_remb_prober_steps_up_and_backs_off_on_congestion() -> None:
    prober = RembProber()
    assert prober.step(400_000, 500_000, -1e9, 0.0) == 0.0  # the layers fit
    assert prober.step(600_000, 200_000, 0.5, 1.0) == 0.0  # congested 0.5 s ago
    target = prober.step(600_000, 200_000, -1e9, 3.0)
    assert target == 400_000 and prober.active  # twice the estimate at most
    assert prober.step(600_000, 200_000, -1e9, 4.6) == 0.0  # over: waiting for a verdict
    assert prober.finish(-1e9, 4.8) is None  # not yet (grace)
    assert prober.finish(-1e9, 5.2) == 400_000 and prober.successes == 1
    assert prober.step(600_000, 400_000, -1e9, 5.3) == 600_000 * 1.2  # next one at once
    assert prober.finish(6.0, 7.5) is None  # congestion during the probe
    assert prober.backoff == 2.0
    assert prober.step(600_000, 400_000, 6.0, 8.5) == 0.0  # quiet period, then back-off
    assert prober.step(600_000, 400_000, 6.0, 9.6) > 0
    assert prober.finish(9.7, 11.8) is None and prober.backoff == 4.0
