"""The NAT lab's server: the real ``visavis serve`` (every part, uvloop) in the public
namespace, configured by a TOML file like an operator's.

STUN/TURN listens on 198.18.0.1:3478 (UDP and TCP) and :5349 (TLS, with a certificate
for that address that the lab's peers trust through ``SSL_CERT_FILE``); signaling on
:8080. :func:`command` is what the runner starts; it is ready once it prints
:data:`tests.served.READY_LINE`.
"""

from __future__ import annotations

from pathlib import Path

from tests.relay.tls_cert import write_self_signed
from tests.served import visavis_command

from .lab import PUBLIC_NET, SERVER_IP

SIGNALING_PORT = 8080
TURN_PORT = 3478
TURNS_PORT = 5349


def write_config(directory: Path) -> tuple[Path, Path]:
    """The server's configuration file and the certificate peers must trust."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = write_self_signed(directory, ips=(SERVER_IP,))
    config = directory / "visavis.toml"
    config.write_text(
        f"""\
data_dir = "{directory / "data"}"
shared_secret = "netlab-secret"
log_level = "warning"

[signaling]
host = "{SERVER_IP}"
port = {SIGNALING_PORT}
rate_limit_per_second = 200
rate_limit_burst = 400

[relay]
listening-ip = ["{SERVER_IP}"]
listening-port = {TURN_PORT}
tls-listening-port = {TURNS_PORT}
allowed-peer-ip = ["{PUBLIC_NET}"]  # 198.18/15 is denied by default
cert = "{cert}"
pkey = "{key}"
"""
    )
    return config, cert


def command(config: Path) -> list[str]:
    return [*visavis_command(), "serve", "--config", str(config)]
