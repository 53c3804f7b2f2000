"""Settings of the selective forwarding unit."""

from __future__ import annotations

from pydantic import BaseModel


class SfuSettings(BaseModel):
    """SFU configuration: one UDP port carries the media of every room."""

    host: str = "127.0.0.1"
    port: int = 3479
    public_url: str | None = None
