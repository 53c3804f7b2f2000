"""ICE choices of the client: which servers a peer connection uses, which host addresses.

aiortc hands aioice one STUN and one TURN server (the first of each in the list), so the
TURN transport has to be chosen before a call: :func:`probe_udp` sends a STUN Binding
request to our STUN server and :func:`choose_ice_servers` keeps UDP TURN when it answered,
else TURN over TCP (a LAN that blocks UDP) and no STUN at all (it could not answer).

aioice gathers host candidates from every interface but loopback, through the module
function ``aioice.ice.get_host_addresses``. :func:`host_addresses` replaces it once with a
wrapper that returns the addresses set for the current task (a context variable), so each
call can pin its own list (``["127.0.0.1"]`` in tests on one machine) without changing
anyone else's behaviour.

aioice nominates aggressively: the controlling agent puts USE-CANDIDATE on every check, so
the first pair to answer wins. Between two cone NATs the direct (srflx) pair needs a
hole punched from both sides and often answers a few hundred milliseconds after a relay
pair does, so the call would settle on the relay. :func:`set_relay_grace` makes a
controlling agent hold back its checks on pairs with a relay end for a grace period after
its first check; direct pairs that work win, and a relay-only path costs the grace period
once, at setup.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import secrets
import socket
import time
from collections.abc import Iterator
from typing import Any, Literal

import aioice.ice
from aiortc import RTCIceServer

from visavis.protocol.stun import MessageClass, Method, StunError, encode_message, parse_message
from visavis.signaling import messages as m

log = logging.getLogger("visavis.client")

PROBE_TIMEOUT = 0.6
PROBE_TRIES = 2

_host_override: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "visavis_host_addresses", default=None
)
_original_get_host_addresses = aioice.ice.get_host_addresses


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    override = _host_override.get()
    if override is not None:
        return [a for a in override if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]
    return list(_original_get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6))


aioice.ice.get_host_addresses = _get_host_addresses

_original_check_start = aioice.ice.Connection.check_start


async def _check_start(self: aioice.ice.Connection, pair: aioice.ice.CandidatePair) -> None:
    grace: float = getattr(self, "_visavis_relay_grace", 0.0)
    if grace > 0 and self.ice_controlling:
        started: float = self.__dict__.setdefault("_visavis_first_check", time.monotonic())
        if "relay" in (pair.local_candidate.type, pair.remote_candidate.type):
            wait = started + grace - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
    await _original_check_start(self, pair)


aioice.ice.Connection.check_start = _check_start  # type: ignore[method-assign]


def set_relay_grace(connection: aioice.ice.Connection, seconds: float) -> None:
    """Hold back relay pair checks of ``connection`` (when controlling) for ``seconds``."""
    connection._visavis_relay_grace = seconds  # type: ignore[attr-defined]


@contextlib.contextmanager
def host_addresses(addresses: list[str] | None) -> Iterator[None]:
    """Within this block (and tasks started in it), ICE gathers only ``addresses``."""
    token = _host_override.set(addresses)
    try:
        yield
    finally:
        _host_override.reset(token)


def _split(url: str) -> tuple[str, str, int, str | None]:
    """(scheme, host, port, transport) of a stun:/turn:/turns: URL."""
    scheme, _, rest = url.partition(":")
    rest, _, query = rest.partition("?")
    transport = None
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == "transport":
            transport = value.lower()
    if rest.startswith("["):
        host, _, port_text = rest[1:].partition("]")
        port_text = port_text.lstrip(":")
    else:
        host, _, port_text = rest.partition(":")
    default = 5349 if scheme in ("turns", "stuns") else 3478
    port = int(port_text) if port_text else default
    if transport is None and scheme.startswith("turn"):
        transport = "tcp" if scheme == "turns" else "udp"
    return scheme, host, port, transport


def choose_ice_servers(
    servers: list[m.IceServer],
    turn_transport: Literal["auto", "udp", "tcp", "tls"],
    udp_ok: bool | None,
) -> list[RTCIceServer]:
    """Order and filter signaling's ICE servers for aiortc (first STUN, first TURN win).

    ``"tls"`` prefers ``turns:`` URLs (TURN over TLS over TCP), ``"tcp"`` plain ``turn:``
    over TCP; either falls back to any other TURN URL when signaling offers none.
    """
    want = turn_transport
    if want == "auto":
        want = "tcp" if udp_ok is False else "udp"
    stun_urls: list[str] = []
    turn: list[tuple[int, str, m.IceServer]] = []
    for server in servers:
        for url in server.urls:
            try:
                scheme, _, _, transport = _split(url)
            except ValueError:
                continue
            if scheme == "stun" and udp_ok is not False:
                stun_urls.append(url)
            elif scheme in ("turn", "turns"):
                kind = "tls" if scheme == "turns" else transport
                rank = 0 if kind == want else 1
                turn.append((rank, url, server))
    out: list[RTCIceServer] = []
    if stun_urls:
        out.append(RTCIceServer(urls=stun_urls[0]))
    if turn:
        _, url, server = min(turn, key=lambda t: t[0])
        out.append(RTCIceServer(urls=url, username=server.username, credential=server.credential))
    return out


class _Probe(asyncio.DatagramProtocol):
    def __init__(self, transaction: bytes) -> None:
        self.transaction = transaction
        self.answered: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        with contextlib.suppress(StunError):
            message = parse_message(data)
            if message.transaction_id == self.transaction and not self.answered.done():
                self.answered.set_result(True)


async def probe_udp(servers: list[m.IceServer]) -> bool | None:
    """Does our STUN server answer over UDP from here? None when there is no STUN URL."""
    target: tuple[str, int] | None = None
    for server in servers:
        for url in server.urls:
            with contextlib.suppress(ValueError):
                scheme, host, port, _ = _split(url)
                if scheme == "stun":
                    target = (host, port)
                    break
        if target:
            break
    if target is None:
        return None
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    transaction = secrets.token_bytes(12)
    request = encode_message(Method.BINDING, MessageClass.REQUEST, transaction, [])
    try:
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Probe(transaction), family=family
        )
    except OSError:
        return False
    try:
        for _ in range(PROBE_TRIES):
            try:
                transport.sendto(request, target)
            except OSError:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(protocol.answered), PROBE_TIMEOUT)
                return True
        log.info("no STUN answer over UDP from %s:%d: using TURN over TCP", *target)
        return False
    finally:
        transport.close()
