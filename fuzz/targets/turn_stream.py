"""The TURN TCP/TLS stream framer (RFC 8656 12.5, RFC 6062) fed in uneven chunks.

The first byte of the input picks the chunk size, so the fuzzer explores how reads split
frames; every frame the framer returns is then parsed as the relay does (STUN or
ChannelData by first byte).
"""

from __future__ import annotations

from fuzz.contract import Target
from visavis.protocol.stun import StunParseError, parse_message
from visavis.protocol.turn import ChannelDataError, FramingError, StreamFramer, parse_channel_data


def one_input(data: bytes) -> None:
    if not data:
        return
    chunk = data[0] % 64 + 1
    stream = data[1:]
    framer = StreamFramer(max_frame=2048)
    for start in range(0, len(stream), chunk):
        for frame in framer.feed(stream[start : start + chunk]):
            assert frame, "the framer returned an empty frame"
            try:
                if 0x40 <= frame[0] <= 0x7F:
                    parse_channel_data(frame)
                else:
                    parse_message(frame)
            except (StunParseError, ChannelDataError):
                pass
    assert framer.buffered < 2048 + 4
    framer.take_rest()


TARGET = Target("turn_stream", one_input, (FramingError,), max_len=3000)
