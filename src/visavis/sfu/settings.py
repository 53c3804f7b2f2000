"""Settings of the selective forwarding unit."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator


class SfuSettings(BaseModel):
    """SFU configuration: one UDP port carries the media of every room.

    ``port`` is the control WebSocket (HTTP); ``media_port`` the single UDP media port
    operators open. Both may be 0 (any free port) in tests.
    """

    workers: int = Field(
        default=0,
        ge=0,
        description="SFU worker processes (0: one per core this process may use, but one "
        "when public_url has no {worker} or with role sfu without Redis); each has its own "
        "ports: worker i listens on port, media_port and tcp_port + i * worker_port_step "
        "(docs/processes.md)",
    )
    worker_port_step: int = Field(
        default=3,
        ge=1,
        description="how far apart the workers' ports are: worker i adds i * this to each"
        " fixed port (3: 3479-3481, 3482-3484, ...)",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=3479, description="control WebSocket port (ws://host:port/sfu)")
    public_url: str | None = Field(
        default=None, description="control URL handed to clients (default ws://host:port/sfu)"
    )
    media_host: str | None = Field(default=None, description="UDP bind address (default: host)")
    media_port: int = Field(default=3480, description="the one UDP port for all media")
    tcp_port: int | None = Field(
        default=3481,
        description="ICE-TCP port (RFC 6544 passive candidate, fallback when UDP is blocked);"
        " 0: any free port (also the default when media_port is 0); off/none: no ICE-TCP",
    )
    announced_address: str | None = Field(
        default=None,
        description="IP put in ICE candidates (default: media host, or 127.0.0.1 if wildcard)",
    )
    dead_timeout: float = Field(
        default=10.0, gt=0, description="seconds without any packet before a participant is removed"
    )
    join_timeout: float = Field(default=15.0, gt=0, description="seconds to send the join message")
    keyframe_interval: float = Field(
        default=0.5, gt=0, description="minimum seconds between keyframe requests per layer"
    )
    last_n: int = Field(
        default=4, ge=1, description="recent speakers who get high simulcast layers"
    )
    audio_last_n: int = Field(
        default=3,
        ge=1,
        description="loudest participants whose audio is always forwarded; in bigger rooms"
        " the others' audio is forwarded only while louder than audio_voice_level",
    )
    audio_voice_level: int = Field(
        default=50,
        ge=0,
        le=127,
        description="RFC 6464 level (-dBov) at or above which (0 is loudest) a muted"
        " participant's packets still go out: speech onset is never clipped",
    )
    video_codec: Literal["vp8", "vp9", "h264", "av1"] = Field(
        default="vp8",
        description="video codec of new rooms (a join token's `codec` claim overrides it for"
        " the room it creates); one per room, and a client that cannot send it is refused",
    )
    max_participants: int = Field(default=32, ge=2)
    max_publish_bitrate: int = Field(
        default=3_000_000, gt=0, description="REMB sent to publishers (bits/s)"
    )
    initial_bandwidth: float = Field(
        default=2_000_000, gt=0, description="subscriber downlink assumed before feedback"
    )
    rtcp_rate: float = Field(default=100.0, gt=0, description="RTCP packets/s per participant")
    rtcp_burst: int = Field(default=200, gt=0)
    allowed_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs clients may use for media (empty: any); e.g. 127.0.0.0/8 in tests",
    )
    tick_interval: float = Field(default=0.1, gt=0)
    gso: bool = Field(
        default=True,
        description="send a subscriber's run of equal-sized datagrams as one UDP_SEGMENT send"
        " (Linux >= 4.18; turns itself off where the route refuses it)",
    )

    @field_validator("tcp_port", mode="before")
    @classmethod
    def _tcp_port_off(cls, value: Any) -> Any:
        """TOML has no null: ``tcp_port = "off"`` (or false, "none", "") disables ICE-TCP."""
        if value is False or (
            isinstance(value, str) and value.strip().lower() in ("", "off", "none", "null", "false")
        ):
            return None
        return value

    @model_validator(mode="after")
    def _tcp_port_follows_any(self) -> SfuSettings:
        """``media_port = 0`` (any free port: tests, benchmarks) makes an unset ``tcp_port``
        0 too, so such runs never collide on the fixed default."""
        if self.media_port == 0 and "tcp_port" not in self.model_fields_set:
            self.tcp_port = 0
        return self
