"""Prometheus metrics of the fleet as one signaling node sees it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class FleetMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.refused = Counter(
            "visavis_fleet_records_refused_total",
            "Registration records refused (forged, expired, replayed, future, malformed)",
            ["reason"],
            registry=r,
        )
        self.nodes = Gauge(
            "visavis_fleet_nodes", "Nodes with a valid record", ["kind", "state"], registry=r
        )
        self.placements = Counter(
            "visavis_fleet_placements_total",
            "Rooms placed on a node (placed), cascade legs placed (leg), or refused for lack"
            " of a node (no_node)",
            ["outcome"],
            registry=r,
        )
        self.moves = Counter(
            "visavis_fleet_rooms_moved_total", "Rooms moved to another node", ["reason"], registry=r
        )
        self.placement_seconds = Histogram(
            "visavis_fleet_placement_seconds",
            "Time to place a new room (registry read included)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1),
            registry=r,
        )
        self.reports = Counter(
            "visavis_fleet_media_lost_reports_total",
            "Participants' reports of a lost SFU: counted, acted on (the room moved), or"
            " refused (not the room's node)",
            ["outcome"],
            registry=r,
        )
