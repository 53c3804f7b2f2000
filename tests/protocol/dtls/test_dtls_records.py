"""DTLS record framing (visavis.protocol.dtls.records) on hand-written RFC 6347 records
and on the records OpenSSL writes in a real handshake."""

from __future__ import annotations

import pytest
from dtls_peer import Client
from hypothesis import given
from hypothesis import strategies as st

from visavis.protocol.dtls import (
    HEADER_LENGTH,
    ContentType,
    DtlsRecordError,
    RecordHeader,
    pack_datagrams,
    parse_header,
    split_records,
)

# ChangeCipherSpec, DTLS 1.2, epoch 0, sequence number 7, one byte of fragment (0x01).
CCS = bytes.fromhex("14fefd0000000000000007000101")
# An epoch-1 encrypted record (application data), sequence number 2^32 + 2, 24 bytes.
APPDATA = bytes.fromhex("17fefd00010001000000020018") + bytes(range(24))


def test_header_fields() -> None:
    assert parse_header(CCS) == RecordHeader(ContentType.CHANGE_CIPHER_SPEC, 0xFEFD, 0, 7, 1)
    assert parse_header(APPDATA) == RecordHeader(23, 0xFEFD, 1, (1 << 32) + 2, 24)
    assert parse_header(CCS + APPDATA, len(CCS)).epoch == 1


def test_split_and_refuse() -> None:
    assert split_records(CCS + APPDATA + CCS) == [CCS, APPDATA, CCS]
    assert split_records(b"") == []
    with pytest.raises(DtlsRecordError, match="cut"):
        split_records(CCS + APPDATA[:-1])
    with pytest.raises(DtlsRecordError, match="shorter than a record header"):
        split_records(CCS + APPDATA[:12])
    with pytest.raises(DtlsRecordError, match="content type 63"):
        parse_header(b"\x3f" + CCS[1:])  # a DTLS 1.3 unified header: not parsed
    with pytest.raises(DtlsRecordError, match="version 0x0303"):
        parse_header(b"\x16\x03\x03" + CCS[3:])  # TLS, not DTLS


def test_pack_keeps_order_and_never_cuts_a_record() -> None:
    big = APPDATA[:11] + b"\x05\xdc" + bytes(1500)  # 1,513 bytes: alone, uncut
    records = [CCS, APPDATA, big, CCS, APPDATA]
    assert pack_datagrams(records, 1500) == [CCS + APPDATA, big, CCS + APPDATA]
    assert pack_datagrams(records, len(CCS) + len(APPDATA) - 1) == [
        CCS,
        APPDATA,
        big,
        CCS,
        APPDATA,
    ]
    assert pack_datagrams([], 1500) == []


def test_openssl_client_hello() -> None:
    flight = Client().step()
    assert len(flight) == 1
    header = parse_header(flight[0])
    assert (header.content_type, header.epoch, header.sequence_number) == (22, 0, 0)
    assert header.version in (0xFEFF, 0xFEFD)
    assert flight[0][HEADER_LENGTH] == 1  # handshake type client_hello
    assert split_records(flight[0]) == [flight[0]]


@given(
    sizes=st.lists(st.integers(0, 700), max_size=12),
    limit=st.integers(HEADER_LENGTH, 2000),
)
def test_pack_then_split_gives_the_records_back(sizes: list[int], limit: int) -> None:
    records = [
        bytes((22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, i)) + n.to_bytes(2, "big") + bytes(n)
        for i, n in enumerate(sizes)
    ]
    datagrams = pack_datagrams(records, limit)
    assert [r for d in datagrams for r in split_records(d)] == records
    assert all(len(d) <= limit or len(split_records(d)) == 1 for d in datagrams)
