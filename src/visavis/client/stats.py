"""What a call reports about itself: the path its media takes and live quality figures.

Pure data and arithmetic: :class:`~visavis.client.call.Call` samples aiortc and aioice and
hands the raw numbers to :func:`path_kind` and :class:`RateMeter`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PathKind = Literal["host", "srflx", "relay"]
_RANK: dict[str, int] = {"host": 0, "srflx": 1, "prflx": 1, "relay": 2}


@dataclass(frozen=True)
class Path:
    """The nominated ICE candidate pair, seen from this side.

    ``local_type``/``remote_type`` are ICE candidate types (host, srflx, prflx, relay);
    ``protocol`` is the transport of the pair (always udp with aioice);
    ``relay_protocol`` is how this side reaches its TURN server when its local candidate
    is a relay one (udp, tcp or tls), else None.
    """

    local_type: str
    remote_type: str
    local_address: str
    remote_address: str
    protocol: str = "udp"
    relay_protocol: str | None = None

    @property
    def kind(self) -> PathKind:
        """The costliest hop: relay if either end is a TURN relay, srflx if NAT is crossed."""
        return path_kind(self.local_type, self.remote_type)

    @property
    def label(self) -> str:
        """Short text for a status line, e.g. ``relay/tcp`` or ``srflx/udp``."""
        transport = self.relay_protocol or self.protocol
        return f"{self.kind}/{transport}"


def path_kind(*types: str) -> PathKind:
    """Classify a path from the candidate types at its ends (unknown types count as host)."""
    rank = max((_RANK.get(t, 0) for t in types), default=0)
    kinds: tuple[PathKind, ...] = ("host", "srflx", "relay")
    return kinds[rank]


def combined_kind(*paths: Path | None) -> PathKind | None:
    """The path kind both sides agree on: the costliest of each side's view."""
    known = [p for p in paths if p is not None]
    if not known:
        return None
    return path_kind(*(t for p in known for t in (p.local_type, p.remote_type)))


@dataclass
class RateMeter:
    """Bits per second from a growing byte counter, sampled at caller-given times."""

    last_bytes: int | None = None
    last_time: float | None = None
    bps: float = 0.0

    def sample(self, total_bytes: int, now: float) -> float:
        if self.last_bytes is not None and self.last_time is not None and now > self.last_time:
            delta = max(0, total_bytes - self.last_bytes)
            self.bps = 8 * delta / (now - self.last_time)
        self.last_bytes, self.last_time = total_bytes, now
        return self.bps


@dataclass
class MediaCounters:
    """What this side decoded from the other."""

    video_frames: int = 0
    audio_frames: int = 0
    width: int = 0
    height: int = 0
    first_video_at: float | None = None
    latencies_ms: list[int] = field(default_factory=list)

    def note_latency(self, value: int, keep: int = 2000) -> None:
        self.latencies_ms.append(value)
        if len(self.latencies_ms) > keep:
            del self.latencies_ms[: len(self.latencies_ms) - keep]


@dataclass(frozen=True)
class CallStats:
    """A snapshot of a call's quality (see :meth:`visavis.client.call.Call.stats`)."""

    state: str
    path: Path | None
    rtt_ms: float | None
    bitrate_in_bps: float
    bitrate_out_bps: float
    packets_lost: int
    packets_received: int
    frames_decoded: int
    audio_frames: int
    width: int
    height: int
    latency_ms: float | None  # median of recent stamped frames (test pattern only)

    @property
    def loss_fraction(self) -> float:
        total = self.packets_lost + self.packets_received
        return self.packets_lost / total if total else 0.0

    def status_line(self) -> str:
        """One line for a terminal: state, path, bitrate, RTT, frames, resolution."""
        parts = [self.state]
        if self.path is not None:
            parts.append(self.path.label)
        parts.append(f"in {self.bitrate_in_bps / 1000:.0f} kb/s")
        parts.append(f"out {self.bitrate_out_bps / 1000:.0f} kb/s")
        if self.rtt_ms is not None:
            parts.append(f"rtt {self.rtt_ms:.0f} ms")
        parts.append(f"loss {100 * self.loss_fraction:.1f}%")
        parts.append(f"frames {self.frames_decoded}")
        if self.width:
            parts.append(f"{self.width}x{self.height}")
        if self.latency_ms is not None:
            parts.append(f"latency {self.latency_ms:.0f} ms")
        return " | ".join(parts)


def median(values: list[int] | list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[mid])
    return (ordered[mid - 1] + ordered[mid]) / 2
