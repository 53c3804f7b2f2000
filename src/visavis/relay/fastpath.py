"""The relay's fast-path table: forwarding decisions precomputed from the TURN core.

The core (:class:`visavis.protocol.turn.TurnServer`) stays the decision maker; this
table caches its answer for the commonest case, a UDP client's channel with a valid
permission, so a packet costs one dictionary look-up and one ``sendmsg`` (in C when
``_fastpath`` is built, else in :mod:`._fastpath_py`). For every bound channel whose peer
holds a permission it installs two routes:

* on the client's listener, key (client, channel number) -> send the payload from the
  channel's relay socket to the peer;
* on the relay socket, key (peer) -> send a ChannelData frame from the listener to the
  client.

Each route expires at the earlier of the channel's and the permission's expiry, so a
lapse invalidates it at once, without waiting for the sweep; the core's observer hook
rebuilds an allocation's routes whenever it adds, refreshes or expires permissions or
channels, and removes them when it deletes the allocation. Allocations with a bandwidth
cap (``max-bps``), stream clients, RFC 6062 allocations and IPv6 addresses (native
build) never get routes: the core handles every such packet. Counters live in a
per-allocation :class:`Counters` and are folded into the allocation's counters whenever
the core reads its totals and when it deletes the allocation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from visavis.protocol.turn import Allocation

if TYPE_CHECKING:
    from visavis.relay import _fastpath as fp
else:
    fp: Any
    if os.environ.get("VISAVIS_RELAY_PURE_PYTHON"):
        from visavis.relay import _fastpath_py as fp
    else:
        try:
            from visavis.relay import _fastpath as fp
        except ImportError:  # not compiled: the pure-Python twin
            from visavis.relay import _fastpath_py as fp

NATIVE = bool(fp.NATIVE)
Counters = fp.Counters
Route = fp.Route
drain_client = fp.drain_client
drain_peer = fp.drain_peer
take_io_errors = fp.take_io_errors
set_force_eagain = fp.set_force_eagain


@dataclass(slots=True, eq=False)
class _Entry:
    counters: Any
    installed: list[tuple[dict[object, Any], object]] = field(default_factory=list)


class FastTable:
    """Keeps listener and relay route tables in step with the core (its observer)."""

    def __init__(self, listener_for: Any) -> None:
        # listener_for(server address) -> the _UdpListener serving it, or None
        self._listener_for = listener_for
        self._entries: dict[Allocation, _Entry] = {}

    def allocation_changed(self, alloc: Allocation) -> None:
        entry = self._entries.get(alloc)
        if entry is not None:
            for table, key in entry.installed:
                table.pop(key, None)
            entry.installed.clear()
        ft = alloc.five_tuple
        if (
            ft.transport != "udp"
            or alloc.tcp
            or alloc.bucket_in is not None
            or alloc.bucket_out is not None
        ):
            return
        listener = self._listener_for(ft.server)
        if listener is None:
            return
        client_host, client_port = ft.client
        for ch in alloc.channels.values():
            perm = alloc.permissions.get(ch.peer[0])
            handle = ch.handle
            if perm is None or getattr(handle, "routes", None) is None:
                continue
            k_in = fp.client_key(client_host, client_port, ch.number)
            k_out = fp.peer_key(ch.peer[0], ch.peer[1])
            if k_in is None or k_out is None:
                continue
            if entry is None:
                entry = self._entries[alloc] = _Entry(fp.Counters())
            expiry = min(ch.expiry, perm)
            to_peer = fp.Route(handle.sock, ch.peer[0], ch.peer[1], -1, expiry, entry.counters)
            to_client = fp.Route(
                listener.sock, client_host, client_port, ch.number, expiry, entry.counters
            )
            listener.routes[k_in] = to_peer
            handle.routes[k_out] = to_client
            entry.installed.append((listener.routes, k_in))
            entry.installed.append((handle.routes, k_out))

    def allocation_deleted(self, alloc: Allocation) -> None:
        entry = self._entries.pop(alloc, None)
        if entry is None:
            return
        for table, key in entry.installed:
            table.pop(key, None)
        self._fold(alloc, entry)

    def flush_counters(self) -> None:
        """Fold the fast path's counters into the allocations' (before reading them)."""
        for alloc, entry in self._entries.items():
            self._fold(alloc, entry)

    @staticmethod
    def _fold(alloc: Allocation, entry: _Entry) -> None:
        c = entry.counters
        if c.pkts_out:
            alloc.packets_to_peer += c.pkts_out
            alloc.bytes_to_peer += c.bytes_out
            c.pkts_out = c.bytes_out = 0
        if c.pkts_in:
            alloc.packets_to_client += c.pkts_in
            alloc.bytes_to_client += c.bytes_in
            c.pkts_in = c.bytes_in = 0

    def __len__(self) -> int:
        return sum(len(e.installed) for e in self._entries.values())
