"""coturn-named command-line options for ``visavis serve`` (``--role relay`` or all).

Usage in ``cli.py``::

    @click.command()
    @relay_options
    def serve(..., **kwargs):
        relay = relay_overrides(kwargs)   # pops every relay_* key from kwargs
        settings = load_settings(config, relay=relay or None, ...)

Options left out on the command line are left out of the overrides, so the TOML file and
``VISAVIS_RELAY__*`` variables still apply. Each option's parameter name is
``relay_<field>`` so it cannot clash with the other options of ``serve``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

# (coturn option, type or "flag" or "multiple", help)
_OPTIONS: list[tuple[str, Any, str]] = [
    ("listening-ip", "multiple", "address to listen on (repeatable)"),
    ("listening-port", int, "UDP and TCP port for STUN/TURN (default 3478)"),
    ("tls-listening-port", int, "TLS port (default 5349)"),
    ("external-ip", "multiple", "public address of the relay: IP or IP/private-IP"),
    ("relay-ip", "multiple", "address relay sockets bind to (repeatable)"),
    ("min-port", int, "lowest relay port"),
    ("max-port", int, "highest relay port"),
    ("realm", str, "authentication realm"),
    ("user", "multiple", "long-term user name:password (repeatable)"),
    ("lt-cred-mech", "flag", "accept long-term credentials (on by default)"),
    ("use-auth-secret", "flag", "accept REST credentials (on by default)"),
    ("static-auth-secret", str, "REST secret (default: visavis's shared secret)"),
    ("denied-peer-ip", "multiple", "peer range to refuse: CIDR or first-last (repeatable)"),
    ("allowed-peer-ip", "multiple", "peer range to allow despite the defaults (repeatable)"),
    ("allow-loopback-peers", "flag", "allow relaying to 127.0.0.0/8 and ::1 (testing only)"),
    ("user-quota", int, "allocations per user (0: unlimited)"),
    ("total-quota", int, "allocations in all (0: unlimited)"),
    ("max-bps", int, "bytes per second per allocation and direction (0: unlimited)"),
    ("cert", click.Path(dir_okay=False, path_type=Path), "TLS certificate chain (PEM)"),
    ("pkey", click.Path(dir_okay=False, path_type=Path), "TLS private key (PEM)"),
    ("no-udp", "flag", "no UDP listener"),
    ("no-tcp", "flag", "no TCP listener"),
    ("no-tls", "flag", "no TLS listener"),
    ("no-software-attribute", "flag", "omit SOFTWARE from responses"),
    ("max-allocate-lifetime", int, "longest allocation lifetime, seconds"),
    ("channel-lifetime", int, "channel binding lifetime, seconds"),
    ("permission-lifetime", int, "permission lifetime, seconds"),
    ("stale-nonce", int, "nonce lifetime, seconds"),
]


def _param(option: str) -> str:
    return "relay_" + option.replace("-", "_")


def relay_options(f: F) -> F:
    """Add the coturn-named relay options to a click command."""
    for option, kind, help_text in reversed(_OPTIONS):
        name = _param(option)
        if kind == "flag":
            deco = click.option(f"--{option}", name, is_flag=True, default=False, help=help_text)
        elif kind == "multiple":
            deco = click.option(f"--{option}", name, multiple=True, help=help_text)
        else:
            deco = click.option(f"--{option}", name, type=kind, default=None, help=help_text)
        f = deco(f)
    return f


def relay_overrides(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pop the ``relay_*`` values click parsed; return the ones given, keyed by field name.

    The result is suitable as the ``relay=`` section of :class:`visavis.config.Settings`.
    """
    out: dict[str, Any] = {}
    for option, kind, _ in _OPTIONS:
        value = kwargs.pop(_param(option), None)
        if value is None or value is False or (kind == "multiple" and not value):
            continue
        out[option.replace("-", "_")] = list(value) if kind == "multiple" else value
    return out
