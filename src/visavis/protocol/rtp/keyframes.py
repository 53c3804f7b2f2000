"""Which RTP packets start a keyframe, per video codec (the SFU's layer-switch points).

One entry per codec the SFU forwards; the native fast path (``sfu/_fastpath.c``) has the
same table in C and is tested against this one. A packet carrying the dependency
descriptor header extension is judged by it (start of frame + template structure,
:func:`~visavis.protocol.rtp.av1.dd_starts_keyframe`): the sender's own statement,
outside the payload; otherwise by the codec's payload header.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from visavis.protocol.rtp.av1 import DependencyDescriptor, dd_starts_keyframe, is_av1_keyframe
from visavis.protocol.rtp.errors import RtpError
from visavis.protocol.rtp.h264 import is_h264_keyframe
from visavis.protocol.rtp.vp8 import is_vp8_keyframe, vp8_temporal_id
from visavis.protocol.rtp.vp9 import is_vp9_keyframe, parse_vp9_descriptor


class VideoCodec(enum.IntEnum):
    """Video codecs by the number the fast path's ``Source.codec`` holds."""

    VP8 = 0
    VP9 = 1
    H264 = 2
    AV1 = 3

    @property
    def sdp_name(self) -> str:
        """The encoding name in ``a=rtpmap`` (case-insensitive there)."""
        return {0: "VP8", 1: "VP9", 2: "H264", 3: "AV1"}[self.value]

    @classmethod
    def from_name(cls, name: str) -> VideoCodec:
        """``vp9`` / ``VP9`` / ``video/VP9`` -> VP9; ValueError for others."""
        wanted = name.rsplit("/", 1)[-1].upper()
        for codec in cls:
            if codec.sdp_name == wanted:
                return codec
        raise ValueError(f"unknown video codec {name!r} (vp8, vp9, h264 or av1)")


_BY_CODEC = {
    VideoCodec.VP8: is_vp8_keyframe,
    VideoCodec.VP9: is_vp9_keyframe,
    VideoCodec.H264: is_h264_keyframe,
    VideoCodec.AV1: is_av1_keyframe,
}


def is_keyframe(codec: int, payload: bytes, dependency_descriptor: bytes | None = None) -> bool:
    """True if this packet starts a keyframe of ``codec`` (a :class:`VideoCodec`)."""
    if dependency_descriptor is not None:
        return dd_starts_keyframe(dependency_descriptor)
    check = _BY_CODEC.get(codec)  # type: ignore[call-overload]
    return check(payload) if check is not None else False


@dataclass(frozen=True, slots=True)
class LayerInfo:
    """Where a VP8/VP9/AV1 packet sits in the layer structure (what an SFU drops by)."""

    spatial: int
    temporal: int
    start: bool  # starts a picture (VP9: B of spatial layer 0; VP8: S, partition 0)
    end: bool  # ends a layer frame (VP9's E; never set for VP8)
    intra: bool  # a keyframe starts here: every layer limit may go up


def dd_layer_info(d: DependencyDescriptor) -> LayerInfo | None:
    """The layers of a packet by its dependency descriptor (AV1); None while no template
    structure is known. The fast path has the same (``dd_info``)."""
    if d.spatial_id is None or d.temporal_id is None:
        return None
    start = d.start_of_frame and d.spatial_id == 0
    return LayerInfo(d.spatial_id, d.temporal_id, start, d.end_of_frame, d.keyframe)


def layer_info(codec: int, payload: bytes) -> LayerInfo | None:
    """The layers of a VP8 or VP9 packet; None for other codecs or a truncated
    descriptor (such packets are forwarded as they are). The fast path has the same."""
    if codec == VideoCodec.VP9:
        try:
            d = parse_vp9_descriptor(payload)
        except RtpError:
            return None
        return LayerInfo(d.spatial, d.temporal, d.start and d.spatial == 0, d.end, d.keyframe)
    if codec == VideoCodec.VP8:
        tid = vp8_temporal_id(payload)
        if tid is None:
            return None
        start = bool(payload[0] & 0x10) and not payload[0] & 0x07
        return LayerInfo(0, tid, start, False, is_vp8_keyframe(payload))
    return None
