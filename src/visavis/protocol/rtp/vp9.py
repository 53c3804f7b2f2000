"""VP9 RTP payload descriptor (RFC 9628 s4.2): keyframes and layer indices for the SFU.

The descriptor is written by the sender's packetizer in front of each packet's share of
the frame, outside the frame bytes SFrame encrypts, so the SFU reads it with end-to-end
encryption on and no clear byte of the frame is needed (docs/e2ee.md).

::

    |I|P|L|F|B|E|V|Z|   first byte
    picture ID (I: 7 or 15 bits, M bit first)
    |TID|U|SID|D|       layer indices (L)
    TL0PICIDX           (L and not F: non-flexible mode)
    ...                 reference indices (F and P), scalability structure (V)

A decoder can start at a picture whose base spatial layer is not inter-picture
predicted: B (start of a layer frame), P = 0 and SID 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from visavis.protocol.rtp.errors import RtpError


@dataclass(frozen=True, slots=True)
class Vp9Descriptor:
    """The fields of a VP9 payload descriptor the SFU routes on."""

    start: bool  # B: first packet of a layer frame
    end: bool  # E: last packet of a layer frame
    predicted: bool  # P: inter-picture predicted
    spatial: int  # SID (0 without layer indices)
    temporal: int  # TID (0 without layer indices)
    switching_up: bool  # U
    inter_layer: bool  # D: depends on the spatial layer below
    has_structure: bool  # V: scalability structure present (sent on keyframes)

    @property
    def keyframe(self) -> bool:
        """This packet starts a picture a decoder can start at."""
        return self.start and not self.predicted and self.spatial == 0


def parse_vp9_descriptor(payload: bytes) -> Vp9Descriptor:
    """Parse the leading fields of a VP9 payload descriptor; RtpError if truncated."""
    n = len(payload)
    if n < 1:
        raise RtpError("empty VP9 payload")
    first = payload[0]
    pos = 1
    if first & 0x80:  # I: picture ID, 7 bits or (M) 15 bits
        if n <= pos:
            raise RtpError("VP9 descriptor ends inside its picture ID")
        pos += 2 if payload[pos] & 0x80 else 1
    spatial = temporal = 0
    switching_up = inter_layer = False
    if first & 0x20:  # L: layer indices
        if n <= pos:
            raise RtpError("VP9 descriptor ends inside its layer indices")
        layer = payload[pos]
        temporal, switching_up = layer >> 5, bool(layer & 0x10)
        spatial, inter_layer = (layer >> 1) & 0x07, bool(layer & 0x01)
        pos += 1
    if n < pos:
        raise RtpError("VP9 descriptor overruns the payload")
    return Vp9Descriptor(
        start=bool(first & 0x08),
        end=bool(first & 0x04),
        predicted=bool(first & 0x40),
        spatial=spatial,
        temporal=temporal,
        switching_up=switching_up,
        inter_layer=inter_layer,
        has_structure=bool(first & 0x02),
    )


def is_vp9_keyframe(payload: bytes) -> bool:
    """True if this RTP payload starts a VP9 keyframe (False for malformed payloads)."""
    try:
        return parse_vp9_descriptor(payload).keyframe
    except RtpError:
        return False
