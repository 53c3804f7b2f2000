"""Prometheus metrics of one signaling node, on a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class SignalingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.connections = Gauge(
            "visavis_ws_connections", "Device WebSocket connections on this node", registry=r
        )
        self.calls_started = Counter(
            "visavis_calls_started_total", "Calls started", ["kind"], registry=r
        )
        self.calls_ended = Counter(
            "visavis_calls_ended_total", "Calls ended, by reason", ["reason"], registry=r
        )
        self.calls_live = Gauge(
            "visavis_calls_live", "Calls started on this node not yet ended", ["state"], registry=r
        )
        self.ring_latency = Histogram(
            "visavis_ring_latency_seconds",
            "From an invite's arrival to the ring written to a callee device's socket",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.rejected = Counter(
            "visavis_rejected_messages_total",
            "Requests refused, by reason",
            ["reason"],
            registry=r,
        )
        self.pushes = Counter(
            "visavis_web_push_total", "Web Push sends, by outcome", ["outcome"], registry=r
        )
        self.http_auth_failures = Counter(
            "visavis_auth_failures_total", "Failed sign-ins and bad tokens", ["kind"], registry=r
        )
        self.auth_throttled = Counter(
            "visavis_auth_throttled_total",
            "Sign-ins and sign-ups refused with a delay to wait, by action and scope",
            ["action", "scope"],
            registry=r,
        )
        self.overloaded = Counter(
            "visavis_signaling_overloaded_total",
            "Requests refused as overloaded: where (http, ws, hello) and why (limit: "
            "max_concurrent_requests reached; database_pool: no connection free in time)",
            ["where", "reason"],
            registry=r,
        )
        self.auth_busy = Counter(
            "visavis_auth_busy_total",
            "Sign-ins and sign-ups refused because every password worker was busy",
            registry=r,
        )
