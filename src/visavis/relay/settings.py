"""Settings of the STUN/TURN relay (option names follow coturn's where concepts match)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RelaySettings(BaseModel):
    """STUN/TURN relay configuration."""

    listening_ip: list[str] = Field(default_factory=lambda: ["127.0.0.1"])
    listening_port: int = 3478
    realm: str = "visavis"
