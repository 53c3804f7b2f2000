"""Sans-I/O TURN (RFC 8656): allocations, permissions, channels, authentication, peer
policy and ChannelData framing. The asyncio shell lives in :mod:`visavis.relay`."""

from visavis.protocol.turn.allocation import Allocation, Channel, FiveTuple, Relay
from visavis.protocol.turn.auth import (
    CredentialStore,
    Identity,
    NonceManager,
    parse_user_entry,
    rest_credentials,
    rest_password,
)
from visavis.protocol.turn.channel_data import (
    StreamFramer,
    encode_channel_data,
    is_channel_data,
    parse_channel_data,
)
from visavis.protocol.turn.errors import CapacityError, ChannelDataError, FramingError, TurnError
from visavis.protocol.turn.peer_policy import PeerPolicy, embedded_ipv4, parse_networks
from visavis.protocol.turn.server import (
    Bound,
    ConnectPeer,
    Forward,
    RelayAllocator,
    TcpPeerConnection,
    TurnConfig,
    TurnServer,
    TurnStats,
)

__all__ = [
    "Allocation",
    "Bound",
    "CapacityError",
    "Channel",
    "ChannelDataError",
    "ConnectPeer",
    "CredentialStore",
    "FiveTuple",
    "Forward",
    "FramingError",
    "Identity",
    "NonceManager",
    "PeerPolicy",
    "Relay",
    "RelayAllocator",
    "StreamFramer",
    "TcpPeerConnection",
    "TurnConfig",
    "TurnError",
    "TurnServer",
    "TurnStats",
    "embedded_ipv4",
    "encode_channel_data",
    "is_channel_data",
    "parse_channel_data",
    "parse_networks",
    "parse_user_entry",
    "rest_credentials",
    "rest_password",
]
