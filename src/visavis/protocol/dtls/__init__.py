"""Sans-I/O DTLS-SRTP for the SFU: the server handshake on OpenSSL memory BIOs
(:class:`DtlsServer`), the SRTP keys it exports (RFC 5764), and the record framing the
SFU handles outside OpenSSL (:mod:`visavis.protocol.dtls.records`)."""

from visavis.protocol.dtls.identity import DIGESTS, DtlsIdentity, fingerprint
from visavis.protocol.dtls.records import (
    HEADER_LENGTH,
    ContentType,
    DtlsRecordError,
    RecordHeader,
    pack_datagrams,
    parse_header,
    split_records,
)
from visavis.protocol.dtls.server import DATAGRAM_LIMIT, DtlsServer, DtlsState
from visavis.protocol.dtls.srtp import (
    AEAD_AES_128_GCM,
    AES128_CM_SHA1_80,
    EXPORTER_LABEL,
    PROFILES,
    SrtpKeys,
    SrtpProfile,
    profile_named,
    split_keying_material,
)

__all__ = [
    "AEAD_AES_128_GCM",
    "AES128_CM_SHA1_80",
    "DATAGRAM_LIMIT",
    "DIGESTS",
    "EXPORTER_LABEL",
    "HEADER_LENGTH",
    "PROFILES",
    "ContentType",
    "DtlsIdentity",
    "DtlsRecordError",
    "DtlsServer",
    "DtlsState",
    "RecordHeader",
    "SrtpKeys",
    "SrtpProfile",
    "fingerprint",
    "pack_datagrams",
    "parse_header",
    "profile_named",
    "split_keying_material",
    "split_records",
]
