"""H.264 RTP payload (RFC 6184 s5): which packets start a keyframe, for the SFU.

Packetization mode 1 (the one WebRTC uses) carries a single NAL unit (types 1-23), an
aggregation of several (STAP-A, 24: 2-byte size before each) or a fragment of one
(FU-A, 28: FU indicator, FU header with S(tart)/E(nd) and the fragment's NAL type).
A decoder can start at an IDR slice (type 5) after its parameter sets (SPS 7, PPS 8):
a packet that holds an SPS or the start of an IDR starts a keyframe (WebRTC senders put
SPS and PPS right before each IDR). The NAL unit headers stay in clear under end-to-end
encryption (docs/e2ee.md), so this works on encrypted frames too.
"""

from __future__ import annotations

NAL_IDR = 5
NAL_SPS = 7
NAL_PPS = 8
STAP_A = 24
FU_A = 28
_KEY_TYPES = (NAL_IDR, NAL_SPS)


def nal_types(payload: bytes) -> list[int]:
    """NAL unit types this RTP payload starts (a FU-A fragment other than the first
    starts none); a truncated aggregation yields the types before the damage."""
    if not payload:
        return []
    nal = payload[0] & 0x1F
    if 1 <= nal <= 23:
        return [nal]
    if nal == STAP_A:
        out: list[int] = []
        pos = 1
        n = len(payload)
        while pos + 2 < n:
            size = payload[pos] << 8 | payload[pos + 1]
            if size == 0 or pos + 2 + size > n:
                break
            out.append(payload[pos + 2] & 0x1F)
            pos += 2 + size
        return out
    if nal == FU_A and len(payload) >= 2 and payload[1] & 0x80:  # S bit
        return [payload[1] & 0x1F]
    return []


def is_h264_keyframe(payload: bytes) -> bool:
    """True if this RTP payload holds an SPS or the start of an IDR slice."""
    return any(t in _KEY_TYPES for t in nal_types(payload))
