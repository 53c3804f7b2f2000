"""Plain integer counters bumped on the hot path, exported to Prometheus by a collector.

``prometheus_client`` counters take a lock per increment; the forwarding loop instead
adds to attributes of one :class:`SfuStats`, and :class:`StatsCollector` reads them at
scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

DROP_REASONS = (
    "garbage",  # not STUN, DTLS or RTP/RTCP, or from an unknown address
    "stun_unauthenticated",  # binding request with unknown ufrag or bad integrity
    "dtls_failed",
    "srtp_auth",  # SRTP/SRTCP authentication or replay check failed
    "not_connected",  # media before DTLS completed
    "unknown_ssrc",
    "malformed_rtp",
    "malformed_rtcp",
    "rtcp_rate_limited",
    "nack_rate_limited",
    "publisher_rtx",  # publisher RTX that is padding only, or of an unknown layer
    "send_failed",  # an outgoing datagram the kernel refused (full send buffer, ICMP error)
    # ICE-TCP (tcp.py): the first three close the connection they came on
    "tcp_bad_frame",  # empty or oversized RFC 4571 frame
    "tcp_unauthenticated",  # first frame not an authenticated binding request, or none in time
    "tcp_refused",  # connection from outside allowed_networks, or too many unbound ones
    "tcp_backlog",  # outgoing packet dropped: the client's TCP send buffer is full
    "cascade_bad_message",  # a node-to-node control message that does not parse
)


@dataclass
class SfuStats:
    """Counters of one SFU server."""

    packets_in: int = 0
    packets_forwarded: int = 0
    bytes_forwarded: int = 0
    segmented_datagrams: int = 0  # forwarded inside a UDP_SEGMENT send (several per call)
    rtcp_in: int = 0
    rtcp_out: int = 0
    keyframe_requests: int = 0
    nack_retransmissions: int = 0
    nacks_sent: int = 0  # sequence numbers NACKed to publishers (each retry counts)
    publisher_repairs: int = 0  # publisher RTX packets unwrapped and forwarded
    twcc_feedback: int = 0  # transport-wide CC feedback packets from subscribers
    twcc_feedback_sent: int = 0  # transport-wide CC feedback packets to publishers
    congestion_signals: int = 0  # delay-based overuse detected on a subscriber's downlink
    probe_packets: int = 0  # RTX packets sent to probe a subscriber's downlink
    participants_removed_dead: int = 0
    tcp_connections: int = 0  # ICE-TCP connections accepted
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))

    def drop(self, reason: str, count: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count


class StatsCollector(Collector):
    """Exposes :class:`SfuStats` and live gauges as ``visavis_sfu_*`` metrics."""

    def __init__(self, stats: SfuStats, gauges: Callable[[], dict[str, float]]) -> None:
        self._stats = stats
        self._gauges = gauges

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        for f in fields(self._stats):
            if f.name == "dropped":
                continue
            yield CounterMetricFamily(
                f"visavis_sfu_{f.name}",
                f"SFU {f.name.replace('_', ' ')}",
                value=getattr(self._stats, f.name),
            )
        dropped = CounterMetricFamily(
            "visavis_sfu_dropped_packets", "datagrams dropped, by reason", labels=["reason"]
        )
        for reason, count in self._stats.dropped.items():
            dropped.add_metric([reason], count)
        yield dropped
        for name, value in self._gauges().items():
            yield GaugeMetricFamily(f"visavis_sfu_{name}", f"SFU {name}", value=value)
