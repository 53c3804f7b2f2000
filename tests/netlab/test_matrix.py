"""Calls across real NATs: for each pair of LAN kinds, the call connects, media flows both
ways, and the path is the cheapest one that can work.

LAN kinds (see lab.py): open (public address, no NAT), cone (MASQUERADE: endpoint-
independent mapping, address-and-port-dependent filtering, i.e. port-restricted cone),
sym (MASQUERADE --random-fully), udpblock (only TCP to the server leaves the LAN).

The server is the real ``visavis serve`` (tests/netlab/server.py). A side whose TURN
transport is "tls" is told to use TURN over TLS (``turns:``, port 5349); the "tcp" ones
find by themselves that UDP is blocked and fall back to TURN over TCP.
"""

from __future__ import annotations

import pytest

from visavis.client.stats import Path, combined_kind

from .runner import NatLab, Side

pytestmark = pytest.mark.netlab

# (caller LAN, callee LAN, expected path, TURN transport of the caller, of the callee)
# None: that side does not use its own TURN relay on the chosen path (either is fine
# there when the other side relays).
MATRIX = [
    ("cone1", "cone1", "host", None, None),  # same LAN
    ("open1", "open2", "host", None, None),
    ("open1", "cone2", "srflx", None, None),
    ("open1", "sym2", "srflx", None, None),
    ("cone1", "cone2", "srflx", None, None),
    ("cone1", "sym2", "relay", "udp?", "udp?"),
    ("sym1", "sym2", "relay", "udp?", "udp?"),
    ("open1", "udpblock2", "relay", None, "tcp"),
    ("cone1", "udpblock2", "relay", None, "tcp"),
    ("sym1", "udpblock2", "relay", "udp?", "tcp"),
    ("udpblock1", "udpblock2", "relay", "tcp", "tcp"),
    ("sym1", "udpblock2", "relay", "udp?", "tls"),
    ("udpblock1", "udpblock2", "relay", "tls", "tls"),
]


def _path(side: Side) -> Path:
    assert not side.errors, (side.errors, side.stderr)
    assert len(side.records) == 1, side.stderr
    record = side.records[0]
    assert record["path"] is not None
    return Path(**record["path"])


def _turn_flags(want: str | None) -> tuple[str, ...]:
    return ("--turn-transport", "tls") if want == "tls" else ()


def _check_relay(path: Path, want: str | None) -> None:
    if want is None:
        assert path.local_type != "relay", path
    elif want.endswith("?"):  # relays over UDP if it relays at all
        assert path.local_type != "relay" or path.relay_protocol == want[:-1], path
    else:
        assert path.local_type == "relay" and path.relay_protocol == want, path


@pytest.mark.parametrize(
    ("caller_lan", "callee_lan", "expected", "caller_turn", "callee_turn"),
    MATRIX,
    ids=[f"{a}-{b}" + ("-tls" if "tls" in (c, d) else "") for a, b, _, c, d in MATRIX],
)
def test_call_across_nat(
    natlab: NatLab,
    caller_lan: str,
    callee_lan: str,
    expected: str,
    caller_turn: str | None,
    callee_turn: str | None,
) -> None:
    callers = natlab.clients(caller_lan)
    callees = natlab.clients(callee_lan)
    caller, callee = callers[0], callees[-1]
    assert caller.ns != callee.ns
    a, b = natlab.start_pair(
        caller, callee, caller_extra=_turn_flags(caller_turn), callee_extra=_turn_flags(callee_turn)
    ).finish(90)
    pa, pb = _path(a), _path(b)
    for side in (a, b):
        record = side.records[0]
        assert record["frames"] >= 10, record  # decoded video on both sides
        assert record["audio_frames"] > 0, record
        assert record["resolution"] == [160, 120]
    assert combined_kind(pa, pb) == expected, (pa, pb)
    _check_relay(pa, caller_turn)
    _check_relay(pb, callee_turn)
    if expected == "relay":
        assert "relay" in (pa.local_type, pb.local_type)
    if "udpblock" in callee_lan and callee_turn != "tls":  # told to use TLS: no probe
        assert b.ready["udp_ok"] is False
    if caller_lan.startswith(("open", "cone", "sym")):
        assert a.ready["udp_ok"] is True
