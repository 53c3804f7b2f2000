"""One configuration object for every part of visavis.

Values come, highest priority first, from: explicit keyword arguments (CLI flags),
``VISAVIS_*`` environment variables (nested with ``__``, e.g. ``VISAVIS_RELAY__REALM``),
a TOML file (``--config`` or ``VISAVIS_CONFIG``), then the defaults below. The defaults
run everything in one process on this machine: SQLite under the data directory and the
in-process bus.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from visavis.fleet.settings import FleetSettings
from visavis.relay.settings import RelaySettings
from visavis.sfu.settings import SfuSettings

Role = Literal["all", "signaling", "relay", "sfu"]


def default_data_dir() -> Path:
    """Where the embedded database and generated secrets live (XDG data home)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "visavis"


class SignalingSettings(BaseModel):
    """The HTTP/WebSocket service: accounts, devices, calls."""

    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = Field(
        default=None, description="URL clients use to reach signaling (default: http://host:port)"
    )
    ring_timeout: float = Field(default=30.0, gt=0, description="seconds a callee's devices ring")
    reconnect_grace: float = Field(
        default=60.0, gt=0, description="seconds a disconnected device's messages are kept"
    )
    heartbeat_interval: float = Field(default=15.0, gt=0)
    max_message_bytes: int = Field(default=64 * 1024, gt=0)
    max_participants: int = Field(default=32, ge=2, le=32)
    rate_limit_per_second: float = Field(default=20.0, gt=0)
    rate_limit_burst: int = Field(default=60, gt=0)
    password_workers: int = Field(
        default=1, ge=1, description="threads hashing passwords (argon2: ~0.3 s CPU each)"
    )
    password_queue: int = Field(
        default=16, ge=0, description="sign-ins waiting for a hashing thread before 503"
    )
    login_failures_per_address: int = Field(
        default=20, ge=1, description="failed sign-ins from one address before delays grow"
    )
    login_failures_per_handle: int = Field(
        default=5, ge=1, description="failed sign-ins to one handle before delays grow"
    )
    max_concurrent_requests: int = Field(
        default=64,
        ge=1,
        description="API requests and WebSocket messages one process handles at once; more "
        "are refused at once as overloaded (503 / error 'overloaded'), counted in "
        "visavis_signaling_overloaded_total",
    )
    signups_per_address: int = Field(
        default=100, ge=1, description="sign-ups from one address before delays grow"
    )
    turn_credential_ttl: int = Field(default=24 * 3600, gt=0)
    turn_urls: list[str] = Field(
        default_factory=list,
        description="ICE URLs handed to clients (default: the embedded relay's stun:/turn: URLs)",
    )
    vapid_private_key: SecretStr | None = None
    vapid_subject: str = "mailto:admin@localhost"


class Settings(BaseSettings):
    """Effective configuration of one visavis process."""

    model_config = SettingsConfigDict(
        env_prefix="VISAVIS_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    role: Role = "all"
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL (default: SQLite file in data_dir)"
    )
    database_pool_size: int = Field(
        default=10,
        ge=1,
        description="PostgreSQL connections each signaling process keeps open (max_connections "
        "must cover every process's pool_size + max_overflow)",
    )
    database_max_overflow: int = Field(
        default=10, ge=0, description="extra PostgreSQL connections opened during bursts"
    )
    database_pool_timeout: float = Field(
        default=5.0,
        gt=0,
        description="seconds a request waits for a free database connection before it is "
        "refused as overloaded (503 / error 'overloaded')",
    )
    bus_url: str = Field(default="memory://", description="memory:// or redis://host:port/db")
    redis_prefix: str = "visavis:"
    node_id: str = Field(default_factory=lambda: secrets.token_hex(4))
    shared_secret: SecretStr | None = Field(
        default=None,
        description="secret shared by signaling, relay and SFU (TURN REST credentials, SFU "
        "join tokens); generated into data_dir when unset",
    )
    log_level: str = "info"
    switch_interval_ms: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description="role all: Python's GIL switch interval (sys.setswitchinterval) in "
        "signaling's process (the relay and the SFU run in processes of their own: "
        "docs/processes.md)",
    )
    signaling_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="role all: nice steps signaling's process runs below its relay and SFU "
        "child processes, so that a login flood cannot delay a packet (0: same priority; "
        "docs/processes.md)",
    )
    metrics_port: int | None = Field(
        default=None,
        description="serve Prometheus /metrics on this port (127.0.0.1); signaling also "
        "serves every part's metrics at its own /metrics",
    )
    signaling: SignalingSettings = Field(default_factory=SignalingSettings)
    relay: RelaySettings = Field(default_factory=RelaySettings)
    sfu: SfuSettings = Field(default_factory=SfuSettings)
    fleet: FleetSettings = Field(default_factory=FleetSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = settings_cls.model_config.get("toml_file") or os.environ.get("VISAVIS_CONFIG")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(str(toml_path))))
        return tuple(sources)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'visavis.sqlite3'}"

    def ensure_shared_secret(self) -> str:
        """Return the shared secret, generating and persisting one in data_dir if unset."""
        if self.shared_secret is not None:
            return self.shared_secret.get_secret_value()
        path = self.data_dir / "shared-secret"
        if path.exists():
            value = path.read_text().strip()
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            value = secrets.token_urlsafe(32)
            path.write_text(value)
            path.chmod(0o600)
        self.shared_secret = SecretStr(value)
        return value


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from a TOML file (optional), the environment and overrides."""
    values = {k: v for k, v in overrides.items() if v is not None}
    if config_file is None:
        return Settings(**values)
    if not config_file.exists():
        raise FileNotFoundError(f"config file {config_file} does not exist")

    class FileSettings(Settings):
        model_config = SettingsConfigDict(toml_file=config_file)

    return FileSettings(**values)


def masked(settings: Settings) -> dict[str, Any]:
    """The effective values as plain data, secrets replaced by '********'."""
    return settings.model_dump(mode="json")
