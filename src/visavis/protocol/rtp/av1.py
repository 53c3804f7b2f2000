"""AV1 over RTP for the SFU: the aggregation header and the dependency descriptor.

Both are written by the sender's packetizer outside the frame bytes SFrame encrypts,
so the SFU reads them with end-to-end encryption on (docs/e2ee.md).

* Aggregation header (AV1 RTP spec s4.4), the payload's first byte ``|Z|Y|W W|N|...|``:
  N = 1 on the first packet of a coded video sequence, i.e. of a keyframe.
* Dependency descriptor (AV1 RTP spec appendix A), an RTP header extension
  (``https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension``):
  start/end of frame, frame number and a template id; a keyframe carries the template
  dependency structure, which maps each template to a spatial and temporal layer.
  :func:`parse_dependency_descriptor` reads it (bit syntax of appendix A.2-A.8, names
  kept); a later frame's layers come from the structure in force (``structure=``).
"""

from __future__ import annotations

from dataclasses import dataclass

from visavis.protocol.rtp.errors import RtpError

URI_DEPENDENCY_DESCRIPTOR = (
    "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension"
)


def is_av1_keyframe(payload: bytes) -> bool:
    """True if this RTP payload starts a new coded video sequence (N bit)."""
    return bool(payload) and bool(payload[0] & 0x08)


def dd_starts_keyframe(value: bytes) -> bool:
    """True if a dependency descriptor value starts a frame and carries the template
    dependency structure (what WebRTC senders attach to keyframes)."""
    return len(value) > 3 and bool(value[0] & 0x80) and bool(value[3] & 0x80)


@dataclass(frozen=True, slots=True)
class TemplateStructure:
    """The template dependency structure (A.8.1.3): layers of each template."""

    template_id_offset: int
    decode_targets: int
    spatial_ids: tuple[int, ...]  # per template
    temporal_ids: tuple[int, ...]
    resolutions: tuple[tuple[int, int], ...] = ()  # per spatial layer, if present

    @property
    def max_spatial_id(self) -> int:
        return max(self.spatial_ids)


@dataclass(frozen=True, slots=True)
class DependencyDescriptor:
    """One packet's dependency descriptor."""

    start_of_frame: bool
    end_of_frame: bool
    template_id: int
    frame_number: int
    structure: TemplateStructure | None  # attached to this packet (keyframes)
    spatial_id: int | None  # None when no structure is known
    temporal_id: int | None

    @property
    def keyframe(self) -> bool:
        return self.start_of_frame and self.structure is not None


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def f(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise RtpError("dependency descriptor is truncated")
            value = value << 1 | (self.data[byte] >> (7 - (self.pos & 7))) & 1
            self.pos += 1
        return value

    def ns(self, n: int) -> int:
        w = n.bit_length()
        m = (1 << w) - n
        v = self.f(w - 1)
        if v < m:
            return v
        return (v << 1) - m + self.f(1)


def _structure(bits: _Bits) -> TemplateStructure:
    offset = bits.f(6)
    dt_cnt = bits.f(5) + 1
    spatial: list[int] = []
    temporal: list[int] = []
    sid = tid = 0
    while True:  # template_layers
        spatial.append(sid)
        temporal.append(tid)
        if len(spatial) > 64:
            raise RtpError("dependency descriptor has more than 64 templates")
        idc = bits.f(2)
        if idc == 1:
            tid += 1
        elif idc == 2:
            tid, sid = 0, sid + 1
        elif idc == 3:
            break
    count = len(spatial)
    bits.f(2 * count * dt_cnt)  # template_dtis: not needed to route
    for _ in range(count):  # template_fdiffs
        while bits.f(1):
            bits.f(4)
    chains = bits.ns(dt_cnt + 1)  # template_chains
    if chains:
        for _ in range(dt_cnt):
            bits.ns(chains)
        bits.f(4 * count * chains)
    resolutions: list[tuple[int, int]] = []
    if bits.f(1):  # resolutions_present_flag
        for _ in range(max(spatial) + 1):
            resolutions.append((bits.f(16) + 1, bits.f(16) + 1))
    return TemplateStructure(offset, dt_cnt, tuple(spatial), tuple(temporal), tuple(resolutions))


def parse_dependency_descriptor(
    value: bytes, structure: TemplateStructure | None = None
) -> DependencyDescriptor:
    """Parse a dependency descriptor extension value; ``structure`` is the one in force
    (from the last keyframe) for packets that carry none. RtpError if malformed."""
    if len(value) < 3:
        raise RtpError("dependency descriptor shorter than its 3 mandatory bytes")
    bits = _Bits(value)
    start, end, template_id, frame_number = bits.f(1), bits.f(1), bits.f(6), bits.f(16)
    attached: TemplateStructure | None = None
    if len(value) > 3:
        present = bits.f(1)
        bits.f(4)  # active decode targets, custom dtis / fdiffs / chains flags
        if present:
            attached = _structure(bits)
    known = attached or structure
    spatial_id = temporal_id = None
    if known is not None:
        index = (template_id + 64 - known.template_id_offset) % 64
        if index >= len(known.spatial_ids):
            raise RtpError(f"dependency descriptor names unknown template {template_id}")
        spatial_id, temporal_id = known.spatial_ids[index], known.temporal_ids[index]
    return DependencyDescriptor(
        bool(start), bool(end), template_id, frame_number, attached, spatial_id, temporal_id
    )
