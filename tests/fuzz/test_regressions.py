"""One test per crash the fuzzers found, on the code that ships (see docs/fuzzing.md)."""

from __future__ import annotations

import select
from pathlib import Path
from typing import Any

import pytest
from fuzz.contract import CORPUS_ROOT, check
from fuzz.targets import load

from tests.signaling.harness import cluster
from visavis.protocol.sdp import SdpError, parse_offer
from visavis.sfu.ice_lite import parse_request

OFFER_HEAD = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:a\r\n"
CREDENTIALS = "a=ice-ufrag:u\r\na=ice-pwd:p\r\na=fingerprint:sha-256 AA\r\n"


def test_ice_lite_drops_a_binding_request_with_a_short_ice_attribute() -> None:
    """aioice raised struct.error for an ICE-CONTROLLING attribute whose length runs past
    the message; the SFU's media port logged an unhandled exception per such packet
    instead of counting it as garbage."""
    data = (CORPUS_ROOT / "ice_lite" / "regress-aioice-struct-error").read_bytes()
    assert parse_request(data) is None


def test_sdp_empty_ssrc_lines_are_refused_or_ignored() -> None:
    """``a=ssrc:`` with nothing after it raised IndexError out of parse_offer."""
    with pytest.raises(SdpError, match="expected a number"):
        parse_offer(OFFER_HEAD + "a=ssrc:\r\n" + CREDENTIALS)
    offer = parse_offer(OFFER_HEAD + "a=ssrc-group:\r\na=ssrc-group:FID 1\r\n" + CREDENTIALS)
    assert offer.media[0].fid_groups == []


async def test_deeply_nested_json_gets_malformed_json_and_the_device_stays(
    tmp_path: Path,
) -> None:
    """``[[[[...`` (under the size limit) raised RecursionError out of the frame handler,
    which dropped the device's connection without an answer."""
    async with cluster(tmp_path, max_message_bytes=64 * 1024) as c:
        (alice,) = await c.user("alice@example.com")
        await alice.send_raw("[" * 5000)
        error = await alice.next_event("error")
        assert error["code"] == "malformed_json"
        pong = await alice.request("ping")
        assert pong["type"] == "pong"


def test_sdp_port_of_non_ascii_digits_is_refused() -> None:
    """``str.isdigit`` accepts "²", which ``int`` refuses: ValueError escaped parse_offer."""
    with pytest.raises(SdpError):
        parse_offer("v=0\r\nm=audio \u00b29 UDP/TLS/RTP/SAVPF 111\r\n" + CREDENTIALS)


def test_sdp_payload_type_of_non_ascii_digits_is_no_codec() -> None:
    """A format token such as "9²7" on the m= line passed ``str.isdigit`` in
    ``MediaSection.codec`` and ``int`` raised ValueError out of the SFU's offer handling
    (found by the 10^6-input run). It is not a payload type: the codec search skips it."""
    offer = parse_offer(
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 9\u00b27 111\r\na=mid:a\r\n"
        "a=rtpmap:111 opus/48000/2\r\n" + CREDENTIALS
    )
    codec = offer.media[0].codec()
    assert codec is not None and codec.pt == 111
    data = (CORPUS_ROOT / "sdp" / "regress-superscript-format").read_bytes()
    check(load("sdp"), data)  # the contract holds on the crashing input itself


def test_twin_counts_srtp_over_1500_bytes_as_failed() -> None:
    """The pure-Python fast path (the SFU's fallback without libsrtp2) let pylibsrtp's
    ValueError ("packet is too long": its buffer is 1,500 bytes) escape ``drain`` for a
    datagram over 1,500 bytes from a client's address, losing the batch; and ``protect``
    of a long packet escaped the forwarding loop the same way. Found by ``sfu_native``."""
    import socket

    from visavis.sfu import _fastpath_py as fp
    from visavis.sfu.stats import SfuStats

    key = bytes(range(1, 29))
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sfu,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
    ):
        sfu.bind(("127.0.0.1", 0))
        client.bind(("127.0.0.1", 0))
        link = fp.Link("client")
        link.rx = fp.Session(key, fp.PROFILE_AEAD_AES_128_GCM, False)
        stats = SfuStats()
        raw: list[Any] = []
        forwarder = fp.Forwarder(
            sfu, {fp.link_key(*client.getsockname()): link}, stats, lambda r, *_: raw.append(r)
        )
        client.sendto(b"\x80\x60" + bytes(2000), sfu.getsockname())
        client.sendto(b"\x00\x01\x00\x00", sfu.getsockname())  # then STUN, for Python
        sfu.setblocking(False)
        assert select.select([sfu], [], [], 5)[0]
        while stats.dropped["srtp_auth"] + sum(map(len, filter(None, raw))) < 2:
            forwarder.drain(1.0)
        assert stats.dropped["srtp_auth"] == 1 and [d for d, _ in raw[-1]] == [b"\x00\x01\x00\x00"]
    tx = fp.Session(key, fp.PROFILE_AEAD_AES_128_GCM, True)
    with pytest.raises(fp.SrtpError):
        tx.protect(b"\x80\x60" + bytes(1400))
