"""The native fast path's own SRTP (``_srtp.c`` on OpenSSL) against libsrtp2 (pylibsrtp,
through the pure-Python twin's ``Session``, which sets the same policy as the SFU had:
any SSRC, window 1024, repeated indices allowed on send): known-answer vectors, then the
same operations on both give the same bytes, or both refuse, in both directions and for
both profiles the SFU negotiates, including ROC rollover, reordering, replays, tampered
packets, header extensions, CSRCs, padding and SRTCP indices."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pylibsrtp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visavis.sfu import _fastpath_py

try:
    from visavis.sfu import _fastpath as native
except ImportError:  # CI builds it: a skip there is a failure
    native = None

pytestmark = pytest.mark.skipif(native is None, reason="native SFU fast path not built")

GCM = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM
CM = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
PROFILES = pytest.mark.parametrize("profile", [GCM, CM], ids=["aes-gcm", "aes-cm-hmac"])

# libsrtp2's test/srtp_driver.c (srtp_validate, srtp_validate_gcm): fixed keys, SSRC
# 0xcafebabe, sequence 0x1234, the first SRTCP index (1).
CM_KEY = bytes.fromhex("e1f97a0d3e018be0d64fa32c06de41390ec675ad498afeebb6960b3aabe6")
GCM_KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0fa0a1a2a3a4a5a6a7a8a9aaab")
RTP_PLAIN = bytes.fromhex("800f1234decafbadcafebabe") + b"\xab" * 16
RTCP_PLAIN = bytes.fromhex("81c8000bcafebabe") + b"\xab" * 16
VECTORS = {
    CM: (
        CM_KEY,
        "800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb",
        "81c8000bcafebabe7128035be487b9bdbef89041f977a5a880000001993e08cd54d6c1230798",
    ),
    GCM: (
        GCM_KEY,
        "800f1234decafbadcafebabec5002ede04cfdd2eb91159e0880aa06ed2976826f796b201df3131a127e8a392",
        "81c8000bcafebabec98b8b5df0392a55852b6c21ac8e7025c52c6fbea2b3b446ea31123ba88ce61e80000001",
    ),
}


def key_for(profile: int, seed: int = 1) -> bytes:
    return bytes((seed * 7 + i) % 256 for i in range(28 if profile == GCM else 30))


def rtp(
    ssrc: int, seq: int, payload: bytes, *, ext: int = 0, csrcs: int = 0, pad: int = 0
) -> bytes:
    first = 0x80 | (0x10 if ext else 0) | (0x20 if pad else 0) | csrcs
    head = struct.pack("!BBHII", first, 96, seq & 0xFFFF, seq * 90, ssrc) + bytes(4 * csrcs)
    if ext:
        head += struct.pack("!HH", 0xBEDE, ext) + bytes((0x12,)) * (4 * ext)
    tail = bytes(pad - 1) + bytes((pad,)) if pad else b""
    return head + payload + tail


def rtcp(ssrc: int, body: bytes) -> bytes:
    return struct.pack("!BBHI", 0x80, 201, len(body) // 4 + 1, ssrc) + body


def outcome(fn: Callable[[bytes], bytes], data: bytes, error: type[Exception]) -> Any:
    try:
        return fn(data)
    except error:
        return "refused"


class Pair:
    """The same session on both implementations; every call must agree."""

    def __init__(self, profile: int, key: bytes, outbound: bool) -> None:
        self.py = _fastpath_py.Session(key, profile, outbound)
        self.c = native.Session(key, profile, outbound)

    def __call__(self, method: str, data: bytes) -> Any:
        want = outcome(getattr(self.py, method), data, _fastpath_py.SrtpError)
        got = outcome(getattr(self.c, method), data, native.SrtpError)
        assert got == want, (method, data.hex())
        return got


def test_profile_numbers_are_libsrtp2s() -> None:
    assert native.PROFILE_AEAD_AES_128_GCM == GCM
    assert native.PROFILE_AES128_CM_SHA1_80 == CM


def test_rfc3711_key_derivation_vectors() -> None:
    """RFC 3711 appendix B.3: session keys from a master key and salt."""
    key = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139")
    salt = bytes.fromhex("0EC675AD498AFEEBB6960B3AABE6")
    assert native.srtp_kdf(key, salt, 0, 16).hex() == "c61e7a93744f39ee10734afe3ff7a087"
    assert native.srtp_kdf(key, salt, 2, 14).hex() == "30cbbc08863d8c85d49db34a9ae1"
    auth = native.srtp_kdf(key, salt, 1, 20).hex()
    assert auth == "cebe321f6ff7716b6fd4ab49af256a156d38baa4"


@PROFILES
def test_known_answers(profile: int) -> None:
    key, srtp_hex, srtcp_hex = VECTORS[profile]
    tx = native.Session(key, profile, True)
    assert tx.protect(RTP_PLAIN).hex() == srtp_hex
    assert tx.protect_rtcp(RTCP_PLAIN).hex() == srtcp_hex
    rx = native.Session(key, profile, False)
    assert rx.unprotect(bytes.fromhex(srtp_hex)) == RTP_PLAIN
    assert rx.unprotect_rtcp(bytes.fromhex(srtcp_hex)) == RTCP_PLAIN


@PROFILES
def test_roc_rollover_reorder_and_replay(profile: int) -> None:
    key = key_for(profile)
    tx, rx = Pair(profile, key, True), Pair(profile, key, False)
    seqs = [65530, 65531, 65533, 65532, 65535, 0, 1, 65534, 3, 2, 20000, 40000, 60000]
    seqs += [10, 65534, 11, 11]  # ROC 2, one late from ROC 1, a resend (allowed on send)
    packets = []
    for i, seq in enumerate(seqs):
        packets.append(tx("protect", rtp(1111, seq, bytes((i,)) * (50 + i))))
    assert "refused" not in packets
    # ROC 1 after the wrap: same bytes as libsrtp2, and the rollover decrypts
    after_wrap = packets[seqs.index(0)]
    assert rx("unprotect", packets[0]) == rtp(1111, 65530, bytes(50))
    for packet in packets[1:]:
        rx("unprotect", packet)
    assert rx("unprotect", after_wrap) == "refused"  # replayed
    assert rx("unprotect", packets[1]) == "refused"  # replayed, older


@PROFILES
def test_replay_window_edges(profile: int) -> None:
    key = key_for(profile, 3)
    tx, rx = Pair(profile, key, True), Pair(profile, key, False)
    packets = {s: tx("protect", rtp(7, s, b"x" * 20)) for s in (10, 11, 2000, 2000 - 1023, 976)}
    assert packets[976] == "refused"  # further back than the window: even a sender refuses
    rx("unprotect", packets[10])
    rx("unprotect", packets[2000])
    assert rx("unprotect", packets[11]) == "refused"  # too old now
    assert rx("unprotect", packets[2000 - 1023]) == rtp(7, 977, b"x" * 20)  # the window's edge
    assert rx("unprotect", packets[2000 - 1023]) == "refused"


@PROFILES
def test_tampered_and_truncated_packets_are_refused(profile: int) -> None:
    key = key_for(profile, 5)
    tx, rx = Pair(profile, key, True), Pair(profile, key, False)
    good = tx("protect", rtp(9, 100, b"payload" * 10, ext=2, csrcs=2, pad=3))
    for i in (0, 1, 5, 13, 30, len(good) - 11, len(good) - 1):
        bad = bytearray(good)
        bad[i] ^= 0x04
        assert rx("unprotect", bytes(bad)) == "refused"
    for n in (0, 11, 12, 20, 27, len(good) - 1):
        assert rx("unprotect", good[:n]) == "refused"
    assert rx("unprotect", good) == rtp(9, 100, b"payload" * 10, ext=2, csrcs=2, pad=3)
    assert rx("unprotect", good) == "refused"
    # a header claiming more than the packet holds is refused on send too
    assert tx("protect", b"\x90\x60" + bytes(12) + b"\x00\x01") == "refused"
    assert tx("protect", b"\x8f\x60" + bytes(20)) == "refused"


@PROFILES
def test_rtcp_index_e_bit_and_replay(profile: int) -> None:
    key = key_for(profile, 9)
    tx, rx = Pair(profile, key, True), Pair(profile, key, False)
    sent = [tx("protect_rtcp", rtcp(ssrc, bytes((n,)) * 20)) for n in range(5) for ssrc in (5, 6)]
    tag = 16 if profile == GCM else 10
    trailer = (lambda p: p[-4:]) if profile == GCM else (lambda p: p[-tag - 4 : -tag])
    assert [trailer(p).hex() for p in sent[::2]] == [f"8000000{n}" for n in range(1, 6)]
    for p in sent[::-1]:  # backwards: inside the 128-packet window, all accepted
        assert rx("unprotect_rtcp", p) != "refused"
    assert rx("unprotect_rtcp", sent[3]) == "refused"  # replayed index
    for i in (0, 4, 9, len(sent[0]) - 1):
        bad = bytearray(sent[1])
        bad[i] ^= 0x01
        rx("unprotect_rtcp", bytes(bad))
    fresh = tx("protect_rtcp", rtcp(5, bytes(8)))
    no_e = bytearray(fresh)
    no_e[len(no_e) - (4 if profile == GCM else tag + 4)] &= 0x7F  # claims "not encrypted"
    assert rx("unprotect_rtcp", bytes(no_e)) == "refused"
    assert rx("unprotect_rtcp", fresh) == rtcp(5, bytes(8))
    for n in (0, 8, 11, 12, 8 + tag + 3):
        assert rx("unprotect_rtcp", sent[0][:n]) == "refused"
    assert tx("protect_rtcp", b"\x80\xc8\x00") == "refused"
    # RTP and RTCP of one SSRC share libsrtp2's stream; both still work
    rx("unprotect", tx("protect", rtp(5, 1, b"media")))


@PROFILES
@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["rtp", "rtp", "rtp", "rtcp"]),
            st.sampled_from([1, 2, 0xFFFFFFFF]),
            st.one_of(st.integers(1, 3), st.integers(-40, 0), st.integers(500, 33000)),
            st.integers(0, 300),
            st.sampled_from(["deliver", "deliver", "replay", "tamper", "drop", "late"]),
            st.integers(0, 2),
        ),
        max_size=50,
    )
)
def test_same_outcome_as_libsrtp2_on_arbitrary_traffic(profile: int, steps: list[Any]) -> None:
    key = key_for(profile, 11)
    tx, rx = Pair(profile, key, True), Pair(profile, key, False)
    seq = {1: 65500, 2: 10, 0xFFFFFFFF: 32000}
    late: list[bytes] = []
    for kind, ssrc, step, size, fate, ext in steps:
        seq[ssrc] = (seq[ssrc] + step) & 0xFFFF
        if kind == "rtp":
            packet = tx("protect", rtp(ssrc, seq[ssrc], bytes(size), ext=ext, pad=ext))
            method = "unprotect"
        else:
            packet = tx("protect_rtcp", rtcp(ssrc, bytes(size // 4 * 4)))
            method = "unprotect_rtcp"
        if packet == "refused" or fate == "drop":
            continue
        if fate == "late":
            late.append(packet)
            continue
        if fate == "tamper":
            bad = bytearray(packet)
            bad[size % len(bad)] ^= 0x80
            rx(method, bytes(bad))
        rx(method, packet)
        if fate == "replay":
            assert rx(method, packet) == "refused"
    for packet in late:
        rx("unprotect" if packet[1] < 192 or packet[1] > 223 else "unprotect_rtcp", packet)


def test_bad_keys_and_profiles() -> None:
    with pytest.raises(ValueError):
        native.Session(bytes(30), GCM, True)
    with pytest.raises(ValueError):
        native.Session(bytes(28), CM, True)
    with pytest.raises(ValueError):
        native.Session(bytes(30), 2, True)  # AES-CM with a 32-bit tag: never negotiated


@PROFILES
@settings(max_examples=200, deadline=None)
@given(packets=st.lists(st.binary(max_size=120), max_size=12))
def test_arbitrary_bytes_same_outcome_no_crash(profile: int, packets: list[bytes]) -> None:
    """Whatever the bytes claim (CSRC count, extension length, SSRC, sequence), both
    implementations protect them to the same bytes or both refuse; and both refuse the
    same garbage on every unprotect path (the C parser stays within the packet)."""
    key = key_for(profile, 13)
    tx, rx = Pair(profile, key, True), Pair(profile, key, False)
    for data in packets:
        for method in ("protect", "protect_rtcp"):
            protected = tx(method, data)
            if protected != "refused":
                rx("un" + method, protected)
        rx("unprotect", data)
        rx("unprotect_rtcp", data)
