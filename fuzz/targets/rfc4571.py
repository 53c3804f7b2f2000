"""The SFU's ICE-TCP framing (RFC 4571: 16-bit length prefix) fed in uneven chunks.

The first input byte picks the chunk size; every frame returned must be non-empty and
within the limit, and the framer must never hold more than one frame's worth.
"""

from __future__ import annotations

from fuzz.contract import Target
from visavis.protocol.rfc4571 import MAX_FRAME, FramingError, Rfc4571Framer


def one_input(data: bytes) -> None:
    if not data:
        return
    chunk = data[0] % 64 + 1
    stream = data[1:]
    framer = Rfc4571Framer()
    for start in range(0, len(stream), chunk):
        for frame in framer.feed(stream[start : start + chunk]):
            assert 0 < len(frame) <= MAX_FRAME
            assert Rfc4571Framer.frame(frame)[2:] == frame
        assert framer.buffered <= MAX_FRAME + 1  # its documented bound


TARGET = Target("rfc4571", one_input, (FramingError,), max_len=4200)
