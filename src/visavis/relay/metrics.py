"""Prometheus metrics of one relay, read from the core's counters at scrape time.

Nothing is incremented on the hot path beyond plain integers in the core; this collector
turns them into metric families when Prometheus scrapes. Each :class:`RelayServer`
registers its own collector on the registry it was given (a fresh ``CollectorRegistry``
when none), so tests can run many servers in one process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from visavis.protocol.turn import TurnServer


class RelayCollector(Collector):
    """Exports allocations, relayed packets/bytes, auth failures, denied peers, drops."""

    def __init__(self, core: Callable[[], TurnServer | None], extra: Callable[[], dict[str, int]]):
        self._core = core
        self._extra = extra

    def collect(self) -> Iterator[Metric]:
        core = self._core()
        if core is None:
            return
        s = core.stats
        g = GaugeMetricFamily("visavis_relay_allocations", "Current TURN allocations")
        g.add_metric([], len(core.allocations))
        yield g
        c = CounterMetricFamily(
            "visavis_relay_allocations_created", "TURN allocations created since start"
        )
        c.add_metric([], s.allocations_created)
        yield c
        p_out, b_out, p_in, b_in = core.totals()
        packets = CounterMetricFamily(
            "visavis_relay_packets_relayed", "Packets relayed", labels=["direction"]
        )
        packets.add_metric(["to_peer"], p_out)
        packets.add_metric(["to_client"], p_in)
        yield packets
        octets = CounterMetricFamily(
            "visavis_relay_bytes_relayed", "Payload bytes relayed", labels=["direction"]
        )
        octets.add_metric(["to_peer"], b_out)
        octets.add_metric(["to_client"], b_in)
        yield octets
        for name, help_text, label, counter in (
            ("auth_failures", "Authentication failures", "reason", s.auth_failures),
            ("denied_peers", "Peers refused by the peer policy", "reason", s.denied_peers),
            ("requests", "STUN/TURN requests received", "method", s.requests),
            ("responses", "Responses sent (0 = success)", "code", s.responses),
        ):
            fam = CounterMetricFamily(f"visavis_relay_{name}", help_text, labels=[label])
            for key, value in sorted(counter.items(), key=lambda kv: str(kv[0])):
                fam.add_metric([str(key)], value)
            yield fam
        dropped = CounterMetricFamily(
            "visavis_relay_dropped", "Packets dropped, by reason", labels=["reason"]
        )
        merged = dict(s.dropped)
        merged["relay"] = merged.get("relay", 0) + sum(a.dropped for a in core.allocations.values())
        for key, value in self._extra().items():
            merged[key] = merged.get(key, 0) + value
        for key, value in sorted(merged.items()):
            dropped.add_metric([key], value)
        yield dropped
