"""Property tests: arbitrary bytes give a Message or a StunParseError, never anything else;
encoded messages parse back to themselves; integrity survives a round trip."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

from hypothesis import given, settings
from hypothesis import strategies as st

from visavis.protocol.stun import (
    ATTRIBUTE_CLASSES,
    AttrType,
    ChannelNumber,
    Data,
    ErrorCodeAttr,
    EvenPort,
    Lifetime,
    Message,
    MessageClass,
    Nonce,
    PasswordAlgorithms,
    PasswordAlgorithmValue,
    RawAttribute,
    Realm,
    RequestedTransport,
    Software,
    StunParseError,
    UnknownAttributes,
    Username,
    XorMappedAddress,
    XorPeerAddress,
    XorRelayedAddress,
    encode_message,
    parse_message,
)
from visavis.protocol.stun.message import message_type, split_message_type

COOKIE = b"\x21\x12\xa4\x42"


def _parse_or_error(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except StunParseError:
        return
    assert isinstance(msg, Message)


@given(st.binary(max_size=600))
def test_arbitrary_bytes(data: bytes) -> None:
    _parse_or_error(data)


@st.composite
def plausible_messages(draw: st.DrawFn) -> bytes:
    """A valid header followed by attribute-shaped noise: reaches the attribute decoders."""
    body = bytearray()
    for _ in range(draw(st.integers(0, 6))):
        atype = draw(st.sampled_from([*ATTRIBUTE_CLASSES, 0x7777, 0xC001]))
        value = draw(st.binary(max_size=40))
        length = draw(st.sampled_from([len(value), len(value) + 1, max(len(value) - 1, 0)]))
        body += struct.pack("!HH", atype, length) + value + b"\x00" * (-len(value) % 4)
    if draw(st.booleans()):
        body += body[:0]
    mtype = draw(st.integers(0, 0x3FFF))
    tid = draw(st.binary(min_size=12, max_size=12))
    length = draw(st.sampled_from([len(body), len(body) + 4, draw(st.integers(0, 0xFFFF))]))
    return struct.pack("!HH", mtype, length) + COOKIE + tid + bytes(body)


@settings(max_examples=400)
@given(plausible_messages())
def test_attribute_shaped_noise(data: bytes) -> None:
    _parse_or_error(data)


@given(st.binary(max_size=80), st.integers(0, len(ATTRIBUTE_CLASSES) - 1))
def test_each_decoder_with_arbitrary_values(value: bytes, index: int) -> None:
    atype = list(ATTRIBUTE_CLASSES)[index]
    body = struct.pack("!HH", atype, len(value)) + value + b"\x00" * (-len(value) % 4)
    data = struct.pack("!HH", 0x0001, len(body)) + COOKIE + b"\x01" * 12 + body
    _parse_or_error(data)


ips = st.one_of(
    st.builds(IPv4Address, st.integers(0, 2**32 - 1)),
    st.builds(IPv6Address, st.integers(0, 2**128 - 1)),
)
ports = st.integers(0, 0xFFFF)
text = st.text(max_size=40)
attributes = st.one_of(
    st.builds(XorMappedAddress, ips, ports),
    st.builds(XorPeerAddress, ips, ports),
    st.builds(XorRelayedAddress, ips, ports),
    st.builds(Username, text),
    st.builds(Realm, text),
    st.builds(Nonce, text),
    st.builds(Software, text),
    st.builds(ErrorCodeAttr, st.integers(300, 699), text),
    st.builds(UnknownAttributes, st.lists(st.integers(0, 0xFFFF), max_size=5).map(tuple)),
    st.builds(ChannelNumber, st.integers(0, 0xFFFF)),
    st.builds(Lifetime, st.integers(0, 2**32 - 1)),
    st.builds(Data, st.binary(max_size=64)),
    st.builds(RequestedTransport, st.integers(0, 255)),
    st.builds(EvenPort, st.booleans()),
    st.builds(
        PasswordAlgorithms,
        st.lists(
            st.builds(PasswordAlgorithmValue, st.integers(0, 0xFFFF), st.binary(max_size=7)),
            max_size=3,
        ).map(tuple),
    ),
    st.builds(
        RawAttribute,
        st.integers(0, 0xFFFF).filter(
            lambda t: (
                t not in ATTRIBUTE_CLASSES
                and t not in (AttrType.MESSAGE_INTEGRITY, AttrType.FINGERPRINT)
            )
        ),
        st.binary(max_size=20),
    ),
)


@settings(max_examples=300)
@given(
    st.integers(0, 0xFFF),
    st.sampled_from(list(MessageClass)),
    st.binary(min_size=12, max_size=12),
    st.lists(attributes, max_size=6),
    st.one_of(st.none(), st.binary(min_size=1, max_size=32)),
    st.sampled_from(["sha1", "sha256", "both"]),
    st.booleans(),
)
def test_round_trip(
    method: int,
    cls: MessageClass,
    tid: bytes,
    attrs: list[object],
    key: bytes | None,
    integrity: str,
    fingerprint: bool,
) -> None:
    msg = Message(method, cls, tid, tuple(attrs))  # type: ignore[arg-type]
    data = msg.encode(key=key, integrity=integrity, fingerprint=fingerprint)
    parsed = parse_message(data)
    assert (parsed.method, parsed.cls, parsed.transaction_id) == (method, cls, tid)
    n = len(attrs)
    assert parsed.attributes[:n] == msg.attributes
    if key is not None:
        assert parsed.check_integrity(key)
        assert not parsed.check_integrity(key + b"!")
    assert (
        encode_message(method, cls, tid, parsed.attributes[:n])
        == Message(
            method,
            cls,
            tid,
            tuple(attrs),  # type: ignore[arg-type]
        ).encode()
    )


@given(st.integers(0, 0xFFF), st.sampled_from(list(MessageClass)))
def test_message_type_round_trip(method: int, cls: MessageClass) -> None:
    assert split_message_type(message_type(method, cls)) == (method, cls)
