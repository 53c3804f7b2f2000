"""Turn "cannot bind" into which part failed and which setting to change.

A part that cannot open a socket raises :class:`OSError` with the address in its message
(asyncio's ``('127.0.0.1', 3480)`` form; the relay's own binds use the same form). The
operator needs more than the errno: which part, which address, and the name of the
setting that holds it, in the three spellings they may use (TOML key, environment
variable, command-line flag).
"""

from __future__ import annotations

import errno
import os
import re
import socket
from dataclasses import dataclass

from visavis.config import Settings

_ADDRESS = re.compile(r"\('([^']*)', (\d+)\)")


@dataclass(frozen=True)
class Setting:
    """One setting as the operator may spell it."""

    key: str  # dotted TOML key, e.g. "sfu.media_port"
    flag: str | None = None  # `visavis serve` flag, if any

    @property
    def env(self) -> str:
        return "VISAVIS_" + self.key.upper().replace(".", "__").replace("-", "_")

    def __str__(self) -> str:
        spellings = [self.key, self.env] + ([self.flag] if self.flag else [])
        return f"{spellings[0]} ({', '.join(spellings[1:])})"


def _listeners(settings: Settings, part: str) -> list[tuple[Setting, Setting, list[str], int]]:
    """(host setting, port setting, configured hosts, configured port) of a part."""
    relay, sfu, sig = settings.relay, settings.sfu, settings.signaling
    if part == "relay":
        hosts = list(relay.listening_ip)
        ip = Setting("relay.listening_ip", "--listening-ip")
        return [
            (ip, Setting("relay.listening_port", "--listening-port"), hosts, relay.listening_port),
            (
                ip,
                Setting("relay.tls_listening_port", "--tls-listening-port"),
                hosts,
                relay.tls_listening_port,
            ),
        ]
    if part == "sfu":
        media_host = Setting("sfu.media_host") if sfu.media_host else Setting("sfu.host")
        media = [sfu.media_host or sfu.host]
        found = [
            (Setting("sfu.host"), Setting("sfu.port"), [sfu.host], sfu.port),
            (media_host, Setting("sfu.media_port"), media, sfu.media_port),
        ]
        if sfu.tcp_port is not None:
            found.append((media_host, Setting("sfu.tcp_port"), media, sfu.tcp_port))
        return found
    if part == "signaling":
        return [(Setting("signaling.host", "--host"), Setting("signaling.port", "--port"),
                 [sig.host], sig.port)]  # fmt: skip
    if part == "metrics" and settings.metrics_port is not None:
        return [(Setting("metrics_port"), Setting("metrics_port", "--metrics-port"),
                 ["127.0.0.1"], settings.metrics_port)]  # fmt: skip
    return []


_PARTS = {"sfu": "SFU", "signaling": "signaling server", "metrics": "metrics endpoint"}


def explain(part: str, exc: OSError, settings: Settings) -> str:
    """A sentence for the operator: the part, the address, the cause and the setting."""
    found = _ADDRESS.search(str(exc))
    host, port = (found.group(1), int(found.group(2))) if found else (None, None)
    code = exc.errno
    if code is None and host is not None and port is not None:
        code = _probe(host, port)  # uvloop's datagram bind error carries no errno
    candidates = _listeners(settings, part)
    ports = [p for _, p, _, value in candidates if port is not None and value == port]
    hosts = [h for h, _, values, _ in candidates if host is not None and host in values]
    where = f" on {host}:{port}" if found else ""
    reason = os.strerror(code).lower() if code else str(exc)
    if code == errno.EADDRINUSE:
        advice = "another program holds that port (another visavis?): stop it, or change " + (
            _names(ports) or _any(candidates)
        )
    elif code == errno.EADDRNOTAVAIL:
        advice = "that address is not one of this machine's: change " + (
            _names(hosts) or _any(candidates, host=True)
        )
    elif code == errno.EACCES:
        advice = (
            "ports below 1024 need root or CAP_NET_BIND_SERVICE (docs/operations.md, "
            "'Running as a non-root user'), or change " + (_names(ports) or _any(candidates))
        )
    else:
        advice = f"check {_any(candidates, host=True)} and {_any(candidates)}"
    return f"the {_PARTS.get(part, part)} cannot listen{where} ({reason}): {advice}"


def _probe(host: str, port: int) -> int | None:
    """The errno a bind to (host, port) gets now, trying UDP then TCP (None: it works)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(family, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError as exc:
                return exc.errno
    return None


def _names(settings: list[Setting]) -> str:
    return " or ".join(dict.fromkeys(str(s) for s in settings))


def _any(candidates: list[tuple[Setting, Setting, list[str], int]], host: bool = False) -> str:
    names = dict.fromkeys(str(h if host else p) for h, p, _, _ in candidates)
    return " or ".join(names) or "its address settings"


class ListenError(OSError):
    """A part could not open one of its sockets; ``str()`` says which setting to change."""

    def __init__(self, part: str, exc: OSError, settings: Settings) -> None:
        super().__init__(exc.errno, explain(part, exc, settings))
        self.part = part

    def __str__(self) -> str:
        return str(self.strerror)
