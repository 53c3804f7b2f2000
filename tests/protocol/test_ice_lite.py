"""ICE-lite checks (visavis.protocol.ice_lite) on the project's STUN codec: the RFC 5769
short-term request vector, aioice's requests (a full ICE agent, as aiortc clients send
them) answered so that aioice accepts the answer, and every way a check is refused."""

from __future__ import annotations

import pytest
from aioice import stun as aioice_stun
from hypothesis import given
from hypothesis import strategies as st

from visavis.protocol.ice_lite import answer_check, parse_request
from visavis.protocol.stun import XorMappedAddress, parse_message

# RFC 5769 2.1: a binding request with USERNAME "evtj:h6vY", short-term credentials.
RFC5769_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae802200105354554e207465737420636c69656e74"
    "002400046e0001ff80290008932ff9b151263b36000600096576746a3a68367659202020000800149a"
    "eaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf"
)
RFC5769_PASSWORD = "VOkJxbRl1RmTxUk/WvJxBt"


def aioice_request(username: str, password: str, nominate: bool) -> bytes:
    request = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST)
    request.attributes["USERNAME"] = username
    request.attributes["PRIORITY"] = 1853817087
    request.attributes["ICE-CONTROLLING"] = 42
    if nominate:
        request.attributes["USE-CANDIDATE"] = None
    request.add_message_integrity(password.encode())
    request.add_fingerprint()
    return bytes(request)


def test_rfc5769_request_is_routed_authenticated_and_answered() -> None:
    parsed = parse_request(RFC5769_REQUEST)
    assert parsed is not None and parsed[1] == "evtj"
    result = answer_check(parsed[0], ("192.0.2.1", 32853), RFC5769_PASSWORD, "h6vY")
    assert result is not None and not result.nominated
    response = parse_message(result.response)
    assert response.transaction_id == parsed[0].transaction_id
    assert response.check_integrity(RFC5769_PASSWORD.encode())
    mapped = response.get(XorMappedAddress)
    assert mapped is not None and mapped.address == ("192.0.2.1", 32853)


@pytest.mark.parametrize("nominate", [False, True])
@pytest.mark.parametrize("addr", [("127.0.0.1", 50000), ("2001:db8::1", 443)])
def test_aioice_checks_answered_so_that_aioice_accepts(
    nominate: bool, addr: tuple[str, int]
) -> None:
    data = aioice_request("sfuU:clientU", "sfu-password-0123456789", nominate)
    parsed = parse_request(data)
    assert parsed is not None and parsed[1] == "sfuU"
    result = answer_check(parsed[0], addr, "sfu-password-0123456789", "clientU")
    assert result is not None and result.nominated is nominate
    answer = aioice_stun.parse_message(result.response)  # checks FINGERPRINT
    assert answer.message_class == aioice_stun.Class.RESPONSE
    assert answer.transaction_id == parsed[0].transaction_id
    assert answer.check_message_integrity(b"sfu-password-0123456789")  # type: ignore[arg-type]
    assert answer.attributes["XOR-MAPPED-ADDRESS"] == addr


def test_refused_checks() -> None:
    good = aioice_request("sfuU:clientU", "pw-0123456789abcdefghij", True)
    parsed = parse_request(good)
    assert parsed is not None
    assert answer_check(parsed[0], ("127.0.0.1", 1), "wrong-password-xxxxxxxx", "clientU") is None
    assert answer_check(parsed[0], ("127.0.0.1", 1), "pw-0123456789abcdefghij", "other") is None
    assert answer_check(parsed[0], ("not an ip", 1), "pw-0123456789abcdefghij", "clientU") is None
    # Not a request, no colon in USERNAME, a bad fingerprint, garbage: not even routed.
    response = answer_check(parsed[0], ("127.0.0.1", 1), "pw-0123456789abcdefghij", "clientU")
    assert response is not None and parse_request(response.response) is None
    assert parse_request(aioice_request("nocolon", "pw-0123456789abcdefghij", False)) is None
    broken = bytearray(good)
    broken[-1] ^= 1
    assert parse_request(bytes(broken)) is None
    assert parse_request(b"\x00\x01\x00\x00garbage") is None


@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    parsed = parse_request(data)
    if parsed is not None:
        assert answer_check(parsed[0], ("127.0.0.1", 9), "pw-0123456789abcdefghij", "x") is None
