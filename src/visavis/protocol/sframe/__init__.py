"""SFrame (RFC 9605): end-to-end encryption of media frames, sans-I/O.

``encode_header``/``decode_header`` are the wire format, ``CipherSuite`` and ``Aead``
the five suites and their key schedule, ``SendKey`` and ``Context`` the sender's and
the receiver's state. Everything raises an ``SFrameError`` subclass on bad input.
"""

from visavis.protocol.sframe.context import (
    DEFAULT_SUITE,
    DEFAULT_WINDOW,
    Context,
    SendKey,
    Unprotected,
)
from visavis.protocol.sframe.errors import (
    AuthenticationError,
    CounterExhaustedError,
    HeaderError,
    ReplayError,
    SFrameError,
    TruncatedError,
    UnknownKeyError,
)
from visavis.protocol.sframe.header import Header, decode_header, encode_header
from visavis.protocol.sframe.suites import PARAMS, Aead, CipherSuite, derive_key_salt

__all__ = [
    "DEFAULT_SUITE",
    "DEFAULT_WINDOW",
    "PARAMS",
    "Aead",
    "AuthenticationError",
    "CipherSuite",
    "Context",
    "CounterExhaustedError",
    "Header",
    "HeaderError",
    "ReplayError",
    "SFrameError",
    "SendKey",
    "TruncatedError",
    "UnknownKeyError",
    "Unprotected",
    "decode_header",
    "derive_key_salt",
    "encode_header",
]
