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


@dataclass(frozen=True)
class _Listener:
    """One socket a part binds: where its address and port come from."""

    host_setting: Setting
    port_setting: Setting
    hosts: tuple[str, ...]
    port: int
    kinds: tuple[int, ...]  # socket types bound there


_UDP, _TCP = (socket.SOCK_DGRAM,), (socket.SOCK_STREAM,)


def _listeners(settings: Settings, part: str) -> list[_Listener]:
    relay, sfu, sig = settings.relay, settings.sfu, settings.signaling
    if part == "relay":
        ip, hosts = Setting("relay.listening_ip", "--listening-ip"), tuple(relay.listening_ip)
        plain = Setting("relay.listening_port", "--listening-port")
        tls = Setting("relay.tls_listening_port", "--tls-listening-port")
        return [
            _Listener(ip, plain, hosts, relay.listening_port, _UDP + _TCP),
            _Listener(ip, tls, hosts, relay.tls_listening_port, _TCP),
        ]
    if part == "sfu":
        media_host = Setting("sfu.media_host") if sfu.media_host else Setting("sfu.host")
        media = (sfu.media_host or sfu.host,)
        found = [
            _Listener(Setting("sfu.host"), Setting("sfu.port"), (sfu.host,), sfu.port, _TCP),
            _Listener(media_host, Setting("sfu.media_port"), media, sfu.media_port, _UDP),
        ]
        if sfu.tcp_port is not None:
            found.append(_Listener(media_host, Setting("sfu.tcp_port"), media, sfu.tcp_port, _TCP))
        return found
    if part == "signaling":
        host, port = Setting("signaling.host", "--host"), Setting("signaling.port", "--port")
        return [_Listener(host, port, (sig.host,), sig.port, _TCP)]
    if part == "metrics" and settings.metrics_port is not None:
        port = Setting("metrics_port", "--metrics-port")
        return [_Listener(port, port, ("127.0.0.1",), settings.metrics_port, _TCP)]
    return []


_PARTS = {"sfu": "SFU", "signaling": "signaling server", "metrics": "metrics endpoint"}


def explain(part: str, exc: OSError, settings: Settings) -> str:
    """A sentence for the operator: the part, the address, the cause and the setting."""
    candidates = _listeners(settings, part)
    code = exc.errno
    host: str | None = None
    port: int | None = None
    found = _ADDRESS.search(str(exc))
    if found:
        host, port = found.group(1), int(found.group(2))
        if code is None:  # uvloop's datagram bind error carries no errno
            code = _probe(host, port, _UDP + _TCP)
        by_port = [c for c in candidates if c.port == port]
        by_host = [c for c in candidates if host in c.hosts]
    else:
        # A plain socket.bind error names no address: find the listener that fails the
        # same way now.
        by_port = by_host = []
        for candidate in candidates:
            for h in candidate.hosts:
                got = _probe(h, candidate.port, candidate.kinds)
                if got is not None and (code is None or got == code):
                    code, host, port = got, h, candidate.port
                    by_port = by_host = [*by_port, candidate]
    where = f" on {host}:{port}" if host is not None else ""
    reason = os.strerror(code).lower() if code else str(exc)
    everything = "its address settings"
    ports = _names([c.port_setting for c in by_port or candidates]) or everything
    hosts = _names([c.host_setting for c in by_host or candidates]) or everything
    if code == errno.EADDRINUSE:
        advice = f"another program holds that port (another visavis?): stop it, or change {ports}"
    elif code == errno.EADDRNOTAVAIL:
        advice = f"that address is not one of this machine's: change {hosts}"
    elif code == errno.EACCES:
        advice = (
            "ports below 1024 need root or CAP_NET_BIND_SERVICE (docs/operations.md, "
            f"'Running as a non-root user'), or change {ports}"
        )
    else:
        advice = f"check {hosts} and {ports}"
    return f"the {_PARTS.get(part, part)} cannot listen{where} ({reason}): {advice}"


def _probe(host: str, port: int, kinds: tuple[int, ...]) -> int | None:
    """The errno a bind to (host, port) gets now with these socket types (None: works)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in kinds:
        with socket.socket(family, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError as exc:
                return exc.errno
    return None


def _names(settings: list[Setting]) -> str:
    return " or ".join(dict.fromkeys(str(s) for s in settings))


class ListenError(OSError):
    """A part could not open one of its sockets; ``str()`` says which setting to change."""

    def __init__(self, part: str, exc: OSError, settings: Settings) -> None:
        super().__init__(exc.errno, explain(part, exc, settings))
        self.part = part

    def __str__(self) -> str:
        return str(self.strerror)
