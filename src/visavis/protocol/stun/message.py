"""STUN messages (RFC 8489 5-6, 14): parse bytes into a :class:`Message`, encode it back.

Theory of operation: :func:`parse_message` checks the header (top two bits zero, magic
cookie, 4-aligned length matching the datagram), then walks the attributes. Known types
are decoded by their class in :data:`ATTRIBUTE_CLASSES`; others become
:class:`RawAttribute` (a server answers unknown comprehension-required ones with 420).
Attributes after MESSAGE-INTEGRITY other than MESSAGE-INTEGRITY-SHA256 and FINGERPRINT
are ignored (RFC 8489 14.5); nothing may follow FINGERPRINT, whose CRC is checked.
Integrity is verified later, by :meth:`Message.check_integrity`, once the receiver has
found the key (which needs USERNAME and REALM from the same message).

Every failure raises a :class:`StunParseError` subclass; no other exception escapes.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from visavis.protocol.stun.addresses import (
    AlternateServer,
    MappedAddress,
    OtherAddress,
    ResponseOrigin,
    XorMappedAddress,
    XorPeerAddress,
    XorRelayedAddress,
)
from visavis.protocol.stun.base import Attribute, RawAttribute
from visavis.protocol.stun.constants import (
    HEADER_LENGTH,
    MAGIC_COOKIE,
    MAGIC_COOKIE_BYTES,
    AttrType,
    MessageClass,
    comprehension_required,
)
from visavis.protocol.stun.errors import (
    BadFingerprint,
    MalformedAttribute,
    NotStun,
    StunEncodeError,
    StunParseError,
    TruncatedMessage,
)
from visavis.protocol.stun.ice_attrs import (
    ChangeRequest,
    IceControlled,
    IceControlling,
    Padding,
    Priority,
    ResponsePort,
    UseCandidate,
)
from visavis.protocol.stun.integrity import fingerprint_crc
from visavis.protocol.stun.security import (
    Fingerprint,
    MessageIntegrity,
    MessageIntegritySha256,
    PasswordAlgorithm,
    PasswordAlgorithms,
    Userhash,
)
from visavis.protocol.stun.status import AddressErrorCode, ErrorCodeAttr, UnknownAttributes
from visavis.protocol.stun.text import AlternateDomain, Nonce, Realm, Software, Username
from visavis.protocol.stun.turn_attrs import (
    AdditionalAddressFamily,
    ChannelNumber,
    ConnectionId,
    Data,
    DontFragment,
    EvenPort,
    Icmp,
    Lifetime,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
)

ATTRIBUTE_CLASSES: dict[int, type[Attribute]] = {
    cls.TYPE: cls
    for cls in (
        MappedAddress,
        XorMappedAddress,
        XorPeerAddress,
        XorRelayedAddress,
        AlternateServer,
        ResponseOrigin,
        OtherAddress,
        Username,
        Realm,
        Nonce,
        Software,
        AlternateDomain,
        ErrorCodeAttr,
        AddressErrorCode,
        UnknownAttributes,
        MessageIntegrity,
        MessageIntegritySha256,
        Fingerprint,
        PasswordAlgorithm,
        PasswordAlgorithms,
        Userhash,
        ChannelNumber,
        Lifetime,
        Data,
        RequestedAddressFamily,
        AdditionalAddressFamily,
        EvenPort,
        RequestedTransport,
        DontFragment,
        ReservationToken,
        Icmp,
        ConnectionId,
        Priority,
        UseCandidate,
        IceControlled,
        IceControlling,
        ChangeRequest,
        ResponsePort,
        Padding,
    )
}

A = TypeVar("A", bound=Attribute)


def message_type(method: int, cls: int) -> int:
    """Interleave the 12 method bits and 2 class bits (RFC 8489 5, figure 3)."""
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((cls & 0b01) << 4)
        | ((cls & 0b10) << 7)
    )


def split_message_type(mtype: int) -> tuple[int, MessageClass]:
    method = (mtype & 0x000F) | ((mtype & 0x00E0) >> 1) | ((mtype & 0x3E00) >> 2)
    cls = ((mtype >> 4) & 0b01) | ((mtype >> 7) & 0b10)
    return method, MessageClass(cls)


@dataclass(frozen=True, slots=True)
class Header:
    method: int
    cls: MessageClass
    length: int
    transaction_id: bytes


def parse_header(data: bytes) -> Header:
    """Read the 20-byte header; raise :class:`NotStun` if it is not a STUN header."""
    if len(data) < HEADER_LENGTH:
        raise NotStun("shorter than a STUN header")
    mtype, length = struct.unpack_from("!HH", data)
    if mtype & 0xC000:
        raise NotStun("top two bits set")
    if data[4:8] != MAGIC_COOKIE_BYTES:
        raise NotStun("no magic cookie")
    method, cls = split_message_type(mtype)
    return Header(method, cls, length, bytes(data[8:20]))


def is_stun(data: bytes) -> bool:
    """Cheap demultiplexing test (RFC 7983): first byte 0-3 and the magic cookie."""
    return len(data) >= HEADER_LENGTH and data[0] < 4 and data[4:8] == MAGIC_COOKIE_BYTES


@dataclass(frozen=True, slots=True)
class Message:
    """A STUN message. ``attributes`` keeps wire order; ``get`` returns the first of a type.

    Parsed messages remember their bytes (``raw``) and where MESSAGE-INTEGRITY and
    MESSAGE-INTEGRITY-SHA256 start, for :meth:`check_integrity`.
    """

    method: int
    cls: MessageClass
    transaction_id: bytes
    attributes: tuple[Attribute, ...] = ()
    raw: bytes = field(default=b"", compare=False, repr=False)
    integrity_offset: int = field(default=-1, compare=False, repr=False)
    integrity_sha256_offset: int = field(default=-1, compare=False, repr=False)

    def get(self, kind: type[A]) -> A | None:
        for attr in self.attributes:
            if type(attr) is kind:
                return attr
        return None

    def get_all(self, kind: type[A]) -> list[A]:
        return [a for a in self.attributes if type(a) is kind]

    def has(self, attr_type: int) -> bool:
        return any(a.type == attr_type for a in self.attributes)

    def unknown_required(self) -> list[int]:
        """Types of comprehension-required attributes this codec does not know."""
        return [
            a.attr_type
            for a in self.attributes
            if isinstance(a, RawAttribute) and comprehension_required(a.attr_type)
        ]

    def check_integrity(self, key: bytes) -> bool:
        """Verify MESSAGE-INTEGRITY-SHA256 if present, else MESSAGE-INTEGRITY (constant time).

        False when the message carries neither or was not parsed from bytes.
        """
        if self.integrity_sha256_offset >= 0:
            mi256 = self.get(MessageIntegritySha256)
            assert mi256 is not None
            digest = _integrity_digest(self.raw, self.integrity_sha256_offset, 32, key, "sha256")
            return hmac.compare_digest(digest[: len(mi256.hmac)], mi256.hmac)
        if self.integrity_offset >= 0:
            mi = self.get(MessageIntegrity)
            assert mi is not None
            digest = _integrity_digest(self.raw, self.integrity_offset, 20, key, "sha1")
            return hmac.compare_digest(digest, mi.hmac)
        return False

    def encode(
        self,
        *,
        key: bytes | None = None,
        integrity: str = "sha1",
        fingerprint: bool = False,
    ) -> bytes:
        """Serialize, appending MESSAGE-INTEGRITY (``integrity`` "sha1", "sha256" or "both")
        computed with ``key`` when given, then FINGERPRINT when asked."""
        return encode_message(
            self.method,
            self.cls,
            self.transaction_id,
            self.attributes,
            key=key,
            integrity=integrity,
            fingerprint=fingerprint,
        )


def _integrity_digest(raw: bytes, offset: int, size: int, key: bytes, algo: str) -> bytes:
    # RFC 8489 14.5: the length field covers up to and including this attribute.
    length = offset - HEADER_LENGTH + 4 + size
    covered = raw[:2] + struct.pack("!H", length) + raw[4:offset]
    return hmac.new(key, covered, algo).digest()


def _encode_attr(attr_type: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise StunEncodeError(f"attribute 0x{attr_type:04x} too long")
    return struct.pack("!HH", attr_type, len(value)) + value + b"\x00" * (-len(value) % 4)


def encode_message(
    method: int,
    cls: int,
    transaction_id: bytes,
    attributes: Iterable[Attribute],
    *,
    key: bytes | None = None,
    integrity: str = "sha1",
    fingerprint: bool = False,
) -> bytes:
    """Serialize a message; see :meth:`Message.encode`."""
    if len(transaction_id) != 12:
        raise StunEncodeError("transaction id must be 12 bytes")
    body = bytearray()
    for attr in attributes:
        body += _encode_attr(attr.type, attr.encode_value(transaction_id))
    head = struct.pack("!HHI", message_type(method, cls), 0, MAGIC_COOKIE) + transaction_id
    if key is not None:
        if integrity not in ("sha1", "sha256", "both"):
            raise StunEncodeError(f"unknown integrity {integrity!r}")
        for algo, atype, size in (
            ("sha1", AttrType.MESSAGE_INTEGRITY, 20),
            ("sha256", AttrType.MESSAGE_INTEGRITY_SHA256, 32),
        ):
            if integrity in (algo, "both"):
                length = len(body) + 4 + size
                covered = head[:2] + struct.pack("!H", length) + head[4:] + body
                body += _encode_attr(atype, hmac.new(key, covered, algo).digest())
    if fingerprint:
        length = len(body) + 8
        covered = head[:2] + struct.pack("!H", length) + head[4:] + body
        body += _encode_attr(AttrType.FINGERPRINT, struct.pack("!I", fingerprint_crc(covered)))
    if len(body) > 0xFFFF:
        raise StunEncodeError("message too long")
    return head[:2] + struct.pack("!H", len(body)) + head[4:] + bytes(body)


def parse_message(data: bytes) -> Message:
    """Parse one STUN message occupying all of ``data``.

    :raises StunParseError: (a subclass) on any malformed input, with ``header`` set when
        the header itself was valid.
    """
    header = parse_header(data)
    try:
        return _parse_body(bytes(data), header)
    except StunParseError as exc:
        exc.header = header
        raise
    except (ValueError, IndexError, struct.error) as exc:  # defensive: never escape
        raise MalformedAttribute(f"malformed attribute: {exc}", header) from exc


def _parse_body(data: bytes, header: Header) -> Message:
    if header.length % 4:
        raise TruncatedMessage("length not a multiple of 4")
    if HEADER_LENGTH + header.length != len(data):
        raise TruncatedMessage(
            f"header says {header.length} bytes of attributes, {len(data) - HEADER_LENGTH} given"
        )
    tid = header.transaction_id
    attrs: list[Attribute] = []
    pos = HEADER_LENGTH
    end = len(data)
    mi_off = -1
    mi256_off = -1
    after_integrity = False
    while pos < end:
        if pos + 4 > end:
            raise TruncatedMessage("truncated attribute header")
        atype, alen = struct.unpack_from("!HH", data, pos)
        vstart = pos + 4
        vend = vstart + alen
        if vend > end:
            raise TruncatedMessage(f"attribute 0x{atype:04x} overruns the message")
        value = data[vstart:vend]
        attr_pos = pos
        pos = vend + (-alen % 4)
        if pos > end:
            raise TruncatedMessage("attribute padding overruns the message")
        if atype == AttrType.FINGERPRINT:
            fp = Fingerprint.decode_value(value, tid)
            if pos != end:
                raise MalformedAttribute("attributes after FINGERPRINT")
            covered = data[:2] + struct.pack("!H", attr_pos - HEADER_LENGTH + 8) + data[4:attr_pos]
            if fingerprint_crc(covered) != fp.crc:
                raise BadFingerprint("FINGERPRINT mismatch")
            attrs.append(fp)
            break
        if after_integrity and atype != AttrType.MESSAGE_INTEGRITY_SHA256:
            continue  # RFC 8489 14.5: ignored
        if atype == AttrType.MESSAGE_INTEGRITY_SHA256:
            if mi256_off >= 0:
                continue
            mi256_off = attr_pos
        elif atype == AttrType.MESSAGE_INTEGRITY:
            mi_off = attr_pos
        cls = ATTRIBUTE_CLASSES.get(atype)
        attrs.append(RawAttribute(atype, value) if cls is None else cls.decode_value(value, tid))
        if atype in (AttrType.MESSAGE_INTEGRITY, AttrType.MESSAGE_INTEGRITY_SHA256):
            after_integrity = True
    return Message(header.method, header.cls, tid, tuple(attrs), data, mi_off, mi256_off)
