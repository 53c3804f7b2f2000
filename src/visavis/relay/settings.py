"""Settings of the STUN/TURN relay (option names follow coturn's where concepts match).

Every field also accepts coturn's dashed option name, so a TOML ``[relay]`` section copied
from ``turnserver.conf`` works (``listening-port = 3478``, ``user = ["alice:secret"]``,
``static-auth-secret = "..."``). Fields without a coturn counterpart are visavis's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


def _f(default: Any, name: str, description: str = "", **kw: Any) -> Any:
    return Field(default, description=description, **kw)


class RelaySettings(BaseModel):
    """STUN/TURN relay configuration.

    Each field accepts its own name and coturn's dashed name. When a TOML file says
    ``listening-port`` and a flag or ``VISAVIS_RELAY__LISTENING_PORT`` says
    ``listening_port``, the merged section holds both keys and the field name (from the
    higher priority source) wins.
    """

    @model_validator(mode="before")
    @classmethod
    def _coturn_names(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = {k: v for k, v in data.items() if "-" not in k}
        for key, value in data.items():
            if "-" in key:
                out.setdefault(key.replace("-", "_"), value)
        return out

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    listening_ip: list[str] = Field(
        default_factory=lambda: ["127.0.0.1"],
        description="addresses to listen on for STUN/TURN (UDP, TCP, TLS)",
    )
    listening_port: int = _f(3478, "listening_port", "UDP and TCP port (0: any free port)")
    tls_listening_port: int = _f(5349, "tls_listening_port", "TLS port (0: any free port)")
    external_ip: list[str] = Field(
        default_factory=list,
        description="public address advertised for relays: 'public' or 'public/private'",
    )
    relay_ip: list[str] = Field(
        default_factory=list,
        description="addresses relay sockets bind to (default: the listening addresses)",
    )
    min_port: int = _f(49152, "min_port", "lowest relay port", ge=1, le=65535)
    max_port: int = _f(65535, "max_port", "highest relay port", ge=1, le=65535)
    realm: str = _f("visavis", "realm")
    user: list[str] = Field(
        default_factory=list,
        description="long-term users, 'name:password' or 'name:0x<md5 key hex>'",
    )
    lt_cred_mech: bool = _f(True, "lt_cred_mech", "accept long-term credentials (users)")
    use_auth_secret: bool = _f(True, "use_auth_secret", "accept REST ephemeral credentials")
    static_auth_secret: SecretStr | None = _f(
        None, "static_auth_secret", "REST secret (default: the shared secret of visavis)"
    )
    denied_peer_ip: list[str] = Field(
        default_factory=list,
        description="extra peer ranges to refuse (CIDR, address, or first-last)",
    )
    allowed_peer_ip: list[str] = Field(
        default_factory=list,
        description="peer ranges allowed even though denied by default (e.g. 127.0.0.1)",
    )
    allow_loopback_peers: bool = _f(False, "allow_loopback_peers", "allow 127.0.0.0/8 and ::1")
    user_quota: int = _f(0, "user_quota", "allocations per user (0: unlimited)", ge=0)
    total_quota: int = _f(0, "total_quota", "allocations in all (0: unlimited)", ge=0)
    max_bps: int = _f(0, "max_bps", "bytes/s per allocation and direction (0: unlimited)", ge=0)
    cert: Path | None = _f(None, "cert", "TLS certificate chain (PEM)")
    pkey: Path | None = _f(None, "pkey", "TLS private key (PEM)")
    no_udp: bool = _f(False, "no_udp")
    no_tcp: bool = _f(False, "no_tcp")
    no_tls: bool = _f(False, "no_tls")
    no_software_attribute: bool = _f(False, "no_software_attribute")
    max_allocate_lifetime: int = _f(3600, "max_allocate_lifetime", ge=1)
    default_allocate_lifetime: int = _f(600, "default_allocate_lifetime", ge=1)
    permission_lifetime: int = _f(300, "permission_lifetime", ge=1)
    channel_lifetime: int = _f(600, "channel_lifetime", ge=1)
    stale_nonce: int = _f(600, "stale_nonce", "seconds a nonce stays valid", ge=1)
    unauth_rate: float = _f(20.0, "unauth_rate", "unauthenticated requests/s per IP", gt=0)
    unauth_burst: float = _f(40.0, "unauth_burst", gt=0)
    max_tcp_connections: int = _f(10000, "max_tcp_connections", ge=1)

    @field_validator(
        "listening_ip",
        "external_ip",
        "relay_ip",
        "user",
        "denied_peer_ip",
        "allowed_peer_ip",
        mode="before",
    )
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value
