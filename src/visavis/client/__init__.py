"""visavis.client: the Python SDK for visavis calls (aiortc underneath).

    from visavis.client import CallIncoming, MediaSource, Session

See docs/client.md.
"""

from visavis.client.call import FAILURE_REASONS, Call, CallStateChanged
from visavis.client.errors import AuthError, CallFailed, ClientError, NotConnected, RequestError
from visavis.client.media import MediaSource, TestPatternTrack, ToneTrack
from visavis.client.session import Connected, Disconnected, EventStream, Session
from visavis.client.stats import CallStats, Path
from visavis.signaling.messages import (
    CallEnded,
    CallIncoming,
    CallParticipant,
    CallRinging,
    CallSignalEvent,
    CallStopRinging,
)

__all__ = [
    "FAILURE_REASONS",
    "AuthError",
    "Call",
    "CallEnded",
    "CallFailed",
    "CallIncoming",
    "CallParticipant",
    "CallRinging",
    "CallSignalEvent",
    "CallStateChanged",
    "CallStats",
    "CallStopRinging",
    "ClientError",
    "Connected",
    "Disconnected",
    "EventStream",
    "MediaSource",
    "NotConnected",
    "Path",
    "RequestError",
    "Session",
    "TestPatternTrack",
    "ToneTrack",
]
