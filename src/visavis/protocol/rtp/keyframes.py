"""Which RTP packets start a keyframe, per video codec (the SFU's layer-switch points).

One entry per codec the SFU forwards; the native fast path (``sfu/_fastpath.c``) has the
same table in C and is tested against this one. A packet carrying the dependency
descriptor header extension is judged by it (start of frame + template structure,
:func:`~visavis.protocol.rtp.av1.dd_starts_keyframe`): the sender's own statement,
outside the payload; otherwise by the codec's payload header.
"""

from __future__ import annotations

import enum

from visavis.protocol.rtp.av1 import dd_starts_keyframe, is_av1_keyframe
from visavis.protocol.rtp.h264 import is_h264_keyframe
from visavis.protocol.rtp.vp8 import is_vp8_keyframe
from visavis.protocol.rtp.vp9 import is_vp9_keyframe


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
