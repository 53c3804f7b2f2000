"""SFrame codec: RFC 9605 Appendix C vectors, header properties, every refusal typed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from visavis.e2ee.sframe import check_vectors
from visavis.protocol.sframe import (
    AuthenticationError,
    CipherSuite,
    Context,
    HeaderError,
    ReplayError,
    SendKey,
    SFrameError,
    TruncatedError,
    UnknownKeyError,
    decode_header,
    encode_header,
)

VECTORS = Path(__file__).parent / "vectors" / "rfc9605-sframe.json"
U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
KEY = bytes(range(32))


def test_every_rfc_vector_passes() -> None:
    vectors = json.loads(VECTORS.read_text())
    passed, failures = check_vectors(vectors)
    assert failures == []
    assert passed == sum(len(cases) for cases in vectors.values()) == 297
    assert {case["cipher_suite"] for case in vectors["sframe"]} == {1, 2, 3, 4, 5}


def test_vector_entry_point(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "visavis.e2ee.sframe", "--vectors"]
    ok = subprocess.run([*command, str(VECTORS)], capture_output=True, text=True, check=False)
    assert (ok.returncode, ok.stdout.strip()) == (0, "297 passed, 0 failed")
    vectors = json.loads(VECTORS.read_text())
    vectors["sframe"][4]["ct"] = vectors["sframe"][4]["ct"][:-2] + "00"  # break one tag
    vectors["header"][0]["encoded"] = "01"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(vectors))
    bad = subprocess.run([*command, str(broken)], capture_output=True, text=True, check=False)
    assert (bad.returncode, bad.stdout.strip()) == (1, "295 passed, 2 failed")


@given(U64, U64)
def test_header_round_trip_is_minimal(kid: int, ctr: int) -> None:
    raw = encode_header(kid, ctr)
    parsed = decode_header(raw + b"tail")
    assert (parsed.kid, parsed.ctr, parsed.raw) == (kid, ctr, raw)
    size = lambda v: 0 if v < 8 else (v.bit_length() + 7) // 8  # noqa: E731
    assert len(raw) == 1 + size(kid) + size(ctr)


@given(st.binary(max_size=40))
def test_header_decoder_raises_only_typed_errors(data: bytes) -> None:
    try:
        parsed = decode_header(data)
    except TruncatedError:
        return
    assert data.startswith(parsed.raw)


@pytest.mark.parametrize("value", [-1, 1 << 64])
def test_header_refuses_out_of_range(value: int) -> None:
    with pytest.raises(HeaderError):
        encode_header(value, 0)
    with pytest.raises(HeaderError):
        encode_header(0, value)


@pytest.mark.parametrize("suite", list(CipherSuite))
def test_round_trip_and_each_refusal(suite: CipherSuite) -> None:
    sender = SendKey(0x1234, KEY, suite)
    receiver = Context(suite)
    receiver.add_key(0x1234, KEY)
    frames = [sender.protect(b"frame %d" % i, b"clear") for i in range(3)]
    assert receiver.unprotect(frames[0], b"clear").plaintext == b"frame 0"
    with pytest.raises(ReplayError):
        receiver.unprotect(frames[0], b"clear")
    with pytest.raises(AuthenticationError):  # clear metadata altered
        receiver.unprotect(frames[1], b"Clear")
    tampered = bytearray(frames[1])
    tampered[-1] ^= 1
    with pytest.raises(AuthenticationError):
        receiver.unprotect(bytes(tampered), b"clear")
    assert receiver.unprotect(frames[1], b"clear").plaintext == b"frame 1"  # still fresh
    with pytest.raises(TruncatedError):
        receiver.unprotect(frames[2][:4], b"clear")
    other = SendKey(0x99, KEY, suite)
    with pytest.raises(UnknownKeyError):
        receiver.unprotect(other.protect(b"x"), b"")
    receiver.remove_key(0x1234)
    with pytest.raises(UnknownKeyError):
        receiver.unprotect(frames[2], b"clear")


def test_replay_window_accepts_reordering_inside_and_refuses_outside() -> None:
    sender = SendKey(7, KEY)
    receiver = Context(window=16)
    receiver.add_key(7, KEY)
    frames = [sender.protect(bytes([i])) for i in range(40)]
    for i in (5, 3, 4, 20, 19, 6):
        assert receiver.unprotect(frames[i]).ctr == i
    for i in (3, 20, 4):  # replays
        with pytest.raises(ReplayError):
            receiver.unprotect(frames[i])
    with pytest.raises(ReplayError):  # 20 - 2 >= 16: older than the window
        receiver.unprotect(frames[2])
    assert receiver.unprotect(frames[39]).ctr == 39


def test_wrong_key_is_an_authentication_failure() -> None:
    receiver = Context()
    receiver.add_key(1, bytes(32))
    with pytest.raises(AuthenticationError):
        receiver.unprotect(SendKey(1, KEY).protect(b"secret"))


@given(st.binary(max_size=64), st.binary(max_size=8))
def test_arbitrary_bytes_never_escape_as_other_errors(data: bytes, metadata: bytes) -> None:
    receiver = Context()
    for kid in range(8):
        receiver.add_key(kid, KEY)
    with pytest.raises(SFrameError):
        receiver.unprotect(data, metadata)
