"""Sans-I/O SFU cores: sequence rewriter, layer selector, speaker detector, bandwidth.

The rewriter and selector tables run against the Python classes and their native twins
(``visavis.sfu._fastpath``), which the forwarding path uses."""

from __future__ import annotations

from typing import Any

import pytest

from visavis.sfu import _fastpath_py
from visavis.sfu.bwe import BandwidthEstimator
from visavis.sfu.seq import seq_delta
from visavis.sfu.simulcast import Decision, choose_layer
from visavis.sfu.speaker import SpeakerDetector


def _implementations() -> list[Any]:
    try:
        from visavis.sfu import _fastpath as native
    except ImportError:
        native = None
    return [
        pytest.param(
            native,
            id="native",
            marks=pytest.mark.skipif(native is None, reason="extension not built"),
        ),
        pytest.param(_fastpath_py, id="python"),
    ]


@pytest.fixture(params=_implementations())
def fp(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.mark.parametrize(
    ("a", "b", "d"), [(1, 0, 1), (0, 1, -1), (0, 65535, 1), (65535, 0, -1), (32767, 0, 32767)]
)
def test_seq_delta(a: int, b: int, d: int) -> None:
    assert seq_delta(a, b) == d


def test_rewriter_table(fp: Any) -> None:
    """(event, in seq, in ts, now) -> expected output; a switch resyncs to last+1."""
    r = fp.Rewriter(90000, initial_seq=1000, initial_ts=5000)
    table: list[tuple[str, int, int, float, tuple[int, int] | None]] = [
        ("switch:1", 40000, 7000, 0.0, (1000, 5001)),
        ("", 40001, 7000, 0.0, (1001, 5001)),
        ("", 40003, 10000, 0.033, (1003, 8001)),
        ("", 40002, 10000, 0.034, (1002, 8001)),  # reordered: same offset, no regress
        ("switch:2", 65535, 900, 0.100, (1004, 8001 + 6030)),  # 67 ms after last packet
        ("", 0, 3900, 0.133, (1005, 8001 + 6030 + 3000)),  # input wraps
        ("", 65534, 0, 0.140, None),  # straggler from before the switch: dropped
        ("", 40004, 13000, 0.141, (1040, 1233)),  # (not checked: computed below)
    ]
    for event, seq, ts, now, expected in table[:-1]:
        if event.startswith("switch:"):
            r.switch(int(event[7:]))
        assert r.rewrite(seq, ts, now) == expected, (event, seq)
    assert r.last_sequence == 1005
    assert r.lookup(1002) == (1, 40002, 5000 - 7000 + 1 + 2**32)
    assert r.lookup(1004) == (2, 65535, 8001 + 6030 - 900)
    assert r.lookup(1005)[:2] == (2, 0)
    assert r.timestamp_offset() == 8001 + 6030 - 900
    assert r.lookup(1006) is None  # not sent yet
    assert r.lookup(999) is None  # before the first segment


def test_rewriter_output_wraps(fp: Any) -> None:
    r = fp.Rewriter(48000, initial_seq=65535, initial_ts=0xFFFFFFFF)
    r.switch(7)
    assert r.rewrite(10, 100, 0.0) == (65535, 0)
    assert r.rewrite(11, 1060, 0.02) == (0, 960)
    assert r.lookup(0) == (7, 11, (0 - 100) % 2**32)


def test_rewriter_remembers_the_last_segments_only(fp: Any) -> None:
    r = fp.Rewriter(90000, initial_seq=0, initial_ts=0, history=2)
    assert r.timestamp_offset() is None
    for tag in range(3):
        r.switch(tag)
        r.rewrite(100 * tag, 0, tag * 0.1)
    assert r.lookup(0) is None  # the first segment is forgotten
    assert r.lookup(1) == (1, 100, r.lookup(1)[2])
    assert r.lookup(2)[:2] == (2, 200)


def test_rewriter_skip_closes_the_gaps_of_dropped_packets(fp: Any) -> None:
    """Packets not forwarded (VP9 spatial layers above the subscriber's) leave no hole in
    the output sequence; timestamps keep their offset; NACKs still map back."""
    r = fp.Rewriter(90000, initial_seq=100, initial_ts=0)
    r.skip(5)  # nothing forwarded yet: nothing to continue
    r.switch(0)
    assert r.rewrite(10, 9000, 0.0) == (100, 1)
    r.skip(11)
    r.skip(12)
    assert r.rewrite(13, 9000, 0.01) == (101, 1)  # same picture: same timestamp
    assert r.rewrite(14, 12000, 0.04) == (102, 3001)
    r.skip(12)  # older than what was forwarded: changes nothing
    assert r.rewrite(15, 12000, 0.05) == (103, 3001)
    r.skip(16)
    assert r.rewrite(12, 9000, 0.06) is None  # a straggler from before the last skip
    r.switch(1)
    r.skip(40)  # a switch is pending: the skip is moot
    assert r.rewrite(50, 100, 0.1) == (104, 3001 + 4500)  # 50 ms after
    assert r.lookup(101) == (0, 13, (1 - 9000) % 2**32)
    assert r.lookup(103)[:2] == (0, 15)
    assert r.lookup(104)[:2] == (1, 50)
    assert r.last_sequence == 104


def test_layer_selector_switches_on_keyframes_only(fp: Any) -> None:
    s = fp.Selector(target=2)
    assert s.current is None
    assert s.decide(2, keyframe=False) is Decision.DROP
    assert s.decide(0, keyframe=True) is Decision.SWITCH  # nothing flowing: start low
    assert s.decide(0, keyframe=False) is Decision.FORWARD
    assert s.decide(1, keyframe=True) is Decision.DROP  # not the target
    assert s.decide(2, keyframe=False) is Decision.DROP  # target, but no keyframe yet
    assert s.wants_keyframe
    assert s.decide(2, keyframe=True) is Decision.SWITCH
    assert s.decide(0, keyframe=False) is Decision.DROP
    assert s.decide(2, keyframe=False) is Decision.FORWARD
    s.set_target(1)
    assert s.decide(2, keyframe=False) is Decision.FORWARD  # keep flowing until switch
    assert s.decide(1, keyframe=True) is Decision.SWITCH
    assert s.decide(2, keyframe=True) is Decision.DROP
    assert (s.current, s.target, s.wants_keyframe) == (1, 1, False)
    s.reset()
    assert s.current is None and s.wants_keyframe


@pytest.mark.parametrize(
    ("rates", "budget", "max_layer", "expected"),
    [
        ([150e3, 500e3, 1.5e6], 2e6, 2, 2),
        ([150e3, 500e3, 1.5e6], 1e6, 2, 1),
        ([150e3, 500e3, 1.5e6], 2e6, 0, 0),
        ([150e3, 500e3, 1.5e6], 50e3, 2, 0),
        ([None, 500e3, None], 2e6, 2, 1),
        ([None, None, None], 2e6, 2, None),
    ],
)
def test_choose_layer(
    rates: list[float | None], budget: float, max_layer: int, expected: int | None
) -> None:
    assert choose_layer(rates, budget, max_layer) == expected


def test_speaker_detector_hysteresis() -> None:
    d = SpeakerDetector(hold=0.3, min_interval=1.0)
    now = 0.0
    change: list[tuple[float, str]] = []

    def run(until: float, levels: dict[str, int]) -> None:
        nonlocal now
        while now < until:
            now = round(now + 0.02, 3)
            for name, level in levels.items():
                d.observe(name, level, now)
            result = d.tick(now)
            if result:
                change.append((now, result))

    run(2.0, {"a": 127, "b": 127, "c": 127})
    assert change == []  # silence: nobody dominant
    run(4.0, {"a": 10, "b": 127, "c": 127})
    assert [name for _, name in change] == ["a"]
    assert 2.3 <= change[0][0] <= 2.8
    run(4.2, {"a": 127, "b": 12, "c": 127})  # short interjection: ignored
    run(5.0, {"a": 10, "b": 127, "c": 127})
    assert [name for _, name in change] == ["a"]
    run(8.0, {"a": 127, "b": 8, "c": 120})
    assert [name for _, name in change] == ["a", "b"]
    assert d.recent == ["b", "a"]
    d.remove("b")
    assert d.dominant is None and d.recent == ["a"]


def test_bandwidth_estimator() -> None:
    b = BandwidthEstimator(initial=1e6)
    assert b.estimate(0) == 1e6
    b.on_remb(3e6, 1.0)
    assert b.estimate(1.5) == 3e6
    b.on_loss(0.4, 2.0)
    assert b.estimate(2.0) == pytest.approx(3e6 * 0.8)
    assert b.estimate(10.0) == pytest.approx(1e6 * 0.8)  # stale REMB


def test_layer_selector_paused_forwards_nothing_and_wants_no_keyframe(fp: Any) -> None:
    s = fp.Selector(target=1)
    assert s.decide(1, keyframe=True) is Decision.SWITCH
    s.set_target(-1)
    s.reset()
    assert not s.wants_keyframe
    assert all(s.decide(layer, keyframe=k) is Decision.DROP for layer in (0, 1, 2) for k in (0, 1))
    s.set_target(0)  # shown again: resumes on the next keyframe
    assert s.wants_keyframe
    assert s.decide(0, keyframe=False) is Decision.DROP
    assert s.decide(0, keyframe=True) is Decision.SWITCH
