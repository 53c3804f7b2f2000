"""Settings of the fleet: how a node announces itself and how signaling places rooms."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, model_validator

if TYPE_CHECKING:
    from visavis.config import Settings


class FleetSettings(BaseModel):
    """Registry and placement settings (used only with a Redis bus: ``bus_url=redis://``).

    A node that stops heartbeating leaves the registry ``ttl`` seconds after its last
    heartbeat at the latest; signaling notices within ``ttl + check_interval``.
    """

    region: str = Field(
        default="default",
        description="region label: an SFU node announces it; signaling prefers nodes of its own",
    )
    capacity: int = Field(
        default=130,
        gt=0,
        description="participants this SFU node accepts (docs/scale.md derives the figure);"
        " a node at capacity takes no new rooms",
    )
    relay_capacity: int = Field(
        default=60_000,
        gt=0,
        description="packets/s a relay node relays at most (docs/scale.md: the highest rate"
        " one relay process was measured to hold); a relay at it is handed to devices only"
        " when every relay is",
    )
    cpu_limit: float = Field(
        default=0.85,
        gt=0,
        description="share of one core above which the node takes no new rooms",
    )
    heartbeat_interval: float = Field(default=0.5, gt=0, description="seconds between records")
    ttl: float = Field(
        default=2.0, gt=0, description="seconds a record lives without a new heartbeat"
    )
    check_interval: float = Field(
        default=0.5, gt=0, description="seconds between signaling's checks for dead nodes"
    )
    view_refresh: float = Field(
        default=0.5,
        ge=0,
        description="seconds signaling may place rooms from a cached registry view (0: always"
        " read it)",
    )
    view_size: int = Field(
        default=500,
        gt=0,
        description="nodes a signaling node reads to place rooms (a random sample of a larger"
        " fleet; power-of-d choices needs no more)",
    )
    cascade: bool = Field(
        default=True,
        description="place a room's participants on a node of signaling's own region (or"
        " on a second node when its node is full) and link the nodes (docs/fleet.md)",
    )
    max_clock_skew: float = Field(
        default=2.0, ge=0, description="seconds a record's timestamp may be ahead of ours"
    )

    @model_validator(mode="after")
    def _ttl_covers_heartbeats(self) -> FleetSettings:
        if self.ttl <= self.heartbeat_interval:
            raise ValueError("fleet.ttl must be longer than fleet.heartbeat_interval")
        return self


def uses_registry(settings: Settings) -> bool:
    """Whether this deployment has a fleet registry (a Redis bus) or is one process."""
    return settings.bus_url.startswith(("redis://", "rediss://", "unix://"))
