"""The SFU's ICE-lite binding-request reader: the first thing an unauthenticated UDP or
ICE-TCP packet meets on the SFU's media port. It returns None for anything that is not a
usable binding request and must never raise."""

from __future__ import annotations

from fuzz.contract import Target
from visavis.sfu.ice_lite import parse_request


def one_input(data: bytes) -> None:
    parse_request(data)


TARGET = Target("ice_lite", one_input, (), max_len=1500)
