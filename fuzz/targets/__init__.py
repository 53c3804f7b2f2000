"""The harnesses, one module per parser, each exposing ``TARGET``.

Modules are imported by name (:func:`load`) so that the runner can import them, and the
visavis modules they pull in, under atheris's coverage instrumentation.
"""

from __future__ import annotations

import importlib

from fuzz.contract import Target

MODULES = {  # fastest first, so that --all finishes the quick targets early
    "channel_data": "fuzz.targets.channel_data",
    "ice_lite": "fuzz.targets.ice_lite",
    "stun": "fuzz.targets.stun",
    "rtcp": "fuzz.targets.rtcp",
    "rtp": "fuzz.targets.rtp",
    "signaling_json": "fuzz.targets.signaling_json",
    "sfu_json": "fuzz.targets.sfu_json",
    "sdp": "fuzz.targets.sdp",
    "rfc4571": "fuzz.targets.rfc4571",
    "turn_stream": "fuzz.targets.turn_stream",
    "sfu_native": "fuzz.targets.sfu_native",
}


def load(name: str) -> Target:
    """Import the harness module of ``name`` and return its target."""
    target: Target = importlib.import_module(MODULES[name]).TARGET
    return target
