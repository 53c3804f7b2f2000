"""TURN ChannelData datagrams (RFC 8656 12.4) as the relay's UDP path reads them."""

from __future__ import annotations

from fuzz.contract import Target
from visavis.protocol.turn import ChannelDataError, is_channel_data, parse_channel_data


def one_input(data: bytes) -> None:
    is_channel_data(data)
    parse_channel_data(data)


TARGET = Target("channel_data", one_input, (ChannelDataError,), max_len=1500)
