"""ICE over TCP (RFC 6544 passive candidate, RFC 4571 framing).

- The framer: partial reads, several frames per read, oversized and empty frames.
- The TCP port with a raw Python client: an authenticated binding request binds the
  connection to its transport (answer framed, XOR-MAPPED-ADDRESS = the TCP peer); bad
  input (oversized frame, garbage, a first frame that is not an authenticated check, no
  check in time) closes only that connection and is counted.
- Headless Chromium with UDP to the SFU blocked by an iptables rule on ``lo`` (the UDP
  candidate is offered but fails): it falls back to ICE-TCP, and media flows both ways
  with an aiortc participant that stays on UDP.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aioice import stun

from tests.sfu.conftest import make_settings
from tests.waiting import until, until_async
from visavis.client.sfu_session import PatternTrack, SfuSession, ToneTrack
from visavis.protocol.rfc4571 import FramingError, Rfc4571Framer
from visavis.sfu.server import SfuServer
from visavis.sfu.tcp import IceTcpConnection
from visavis.sfu.transport import WebRtcTransport

# -- the framer --------------------------------------------------------------------------


def test_framer_partial_reads_and_several_frames_per_read() -> None:
    packets = [b"\x00\x01stun", bytes(range(20, 64)) * 20, b"\x80" * 1200, b"x"]
    stream = b"".join(Rfc4571Framer.frame(p) for p in packets)
    # One byte at a time: frames come out whole, exactly when complete.
    framer = Rfc4571Framer()
    out: list[bytes] = []
    for i in range(len(stream)):
        out += framer.feed(stream[i : i + 1])
        assert framer.buffered <= 2 + max(len(p) for p in packets)
    assert out == packets and framer.buffered == 0
    # Everything in one read.
    assert Rfc4571Framer().feed(stream) == packets
    # Splits that cut the length prefix and the payload, several frames per read.
    for cut in (1, 3, 7, len(stream) // 2, len(stream) - 1):
        framer = Rfc4571Framer()
        first = framer.feed(stream[:cut])
        assert first + framer.feed(stream[cut:]) == packets


def test_framer_refuses_oversized_and_empty_frames() -> None:
    framer = Rfc4571Framer(max_frame=1500)
    assert framer.feed(Rfc4571Framer.frame(b"a" * 1500)) == [b"a" * 1500]
    # The length alone condemns a frame: nothing of it needs to arrive.
    with pytest.raises(FramingError):
        framer.feed((1501).to_bytes(2, "big"))
    with pytest.raises(FramingError):
        Rfc4571Framer().feed(b"\xff\xff" + b"x" * 100)
    with pytest.raises(FramingError):  # a good frame, then an empty one in the same read
        Rfc4571Framer().feed(Rfc4571Framer.frame(b"ok") + b"\x00\x00")
    with pytest.raises(ValueError):
        Rfc4571Framer.frame(b"")
    with pytest.raises(ValueError):
        Rfc4571Framer.frame(b"x" * 65536)


# -- the TCP port with a raw client --------------------------------------------------------


class _Listener:
    def on_transport_connected(self, now: float) -> None: ...

    def on_rtp(self, data: bytes, now: float) -> None: ...

    def on_rtcp(self, data: bytes, now: float) -> None: ...


CLIENT_UFRAG = "cli1"


def _transport(sfu: SfuServer) -> WebRtcTransport:
    """A transport as a join would make one, with the client's ICE ufrag applied."""
    transport = WebRtcTransport(
        sfu.identity, sfu.stats, sfu.endpoint.sendto, _Listener(), now=time.monotonic()
    )
    transport.set_remote(CLIENT_UFRAG, [("sha-256", "00")])
    sfu.endpoint.add(transport)
    return transport


def _check(transport: WebRtcTransport, pwd: str | None = None) -> bytes:
    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    request.attributes["USERNAME"] = f"{transport.local_ufrag}:{CLIENT_UFRAG}"
    request.attributes["PRIORITY"] = 1518280447
    request.attributes["ICE-CONTROLLING"] = 1
    request.attributes["USE-CANDIDATE"] = None
    request.add_message_integrity((pwd or transport.local_pwd).encode())
    request.add_fingerprint()
    return bytes(request)


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    length = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 5), "big")
    return await asyncio.wait_for(reader.readexactly(length), 5)


async def _closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """Whether the SFU closes the connection within 5 s (whatever it sent before)."""
    with contextlib.suppress(ConnectionError):
        await asyncio.wait_for(reader.read(), 5)  # reads up to EOF
        return reader.at_eof()
    return True


async def test_tcp_check_binds_connection_and_bad_input_closes_only_it(
    tmp_path: Path,
) -> None:
    sfu = SfuServer(make_settings(tmp_path))
    await sfu.start()
    try:
        assert sfu.tcp_port and sfu.tcp_port != sfu.media_port
        assert f"tcp://127.0.0.1:{sfu.tcp_port} (media, ICE-TCP)" in sfu.endpoints()
        transport = _transport(sfu)
        dropped = sfu.stats.dropped

        # A good client: framed check in, framed success response out; the connection
        # is now the transport's selected path.
        reader, writer = await asyncio.open_connection("127.0.0.1", sfu.tcp_port)
        writer.write(Rfc4571Framer.frame(_check(transport)))
        response = stun.parse_message(await _read_frame(reader))
        assert response.message_class == stun.Class.RESPONSE
        assert response.attributes["XOR-MAPPED-ADDRESS"] == writer.get_extra_info("sockname")
        assert isinstance(transport.address, IceTcpConnection)
        good = transport.address
        # Media sent by the transport goes out framed on that connection.
        good.send(b"\x80\x60hello")
        assert await _read_frame(reader) == b"\x80\x60hello"

        async def bad(payload: bytes, reason: str) -> None:
            before = dropped.get(reason, 0)
            r, w = await asyncio.open_connection("127.0.0.1", sfu.tcp_port)
            w.write(payload)
            assert await _closed_by_peer(r), reason
            assert dropped.get(reason, 0) == before + 1, reason
            w.close()

        await bad((60000).to_bytes(2, "big") + b"x" * 100, "tcp_bad_frame")
        await bad(b"\x00\x00", "tcp_bad_frame")
        await bad(Rfc4571Framer.frame(b"\x80" * 50), "tcp_unauthenticated")  # SRTP first
        await bad(Rfc4571Framer.frame(_check(transport, pwd="wrong")), "tcp_unauthenticated")
        # Another participant's bound connection that turns to garbage is closed too.
        other = _transport(sfu)
        await bad(
            Rfc4571Framer.frame(_check(other)) + Rfc4571Framer.frame(b"\xff garbage"),
            "garbage",
        )
        await until(
            lambda: other.address is None and not other.addresses, "the other path is dropped"
        )
        # Silence: no check within auth_timeout.
        assert sfu.tcp is not None
        sfu.tcp.auth_timeout = 0.2
        await bad(b"", "tcp_unauthenticated")
        assert sfu.tcp.pending == 0

        # None of it disturbed the good connection.
        assert transport.address is good and not good.closed
        writer.write(Rfc4571Framer.frame(_check(transport)))
        assert stun.parse_message(await _read_frame(reader)).message_class == (stun.Class.RESPONSE)
        # The participant leaving closes its connections.
        sfu.endpoint.remove(transport)
        assert await _closed_by_peer(reader)
        tcp = sfu.tcp
        await until(
            lambda: transport.address is None and not tcp.connections, "the connections closed"
        )
        writer.close()
    finally:
        await sfu.close()


async def test_tcp_disabled(tmp_path: Path) -> None:
    sfu = SfuServer(make_settings(tmp_path, tcp_port="off"))
    await sfu.start()
    try:
        assert sfu.tcp_port is None and sfu.tcp is None
        assert not any(e.startswith("tcp://") for e in sfu.endpoints())
    finally:
        await sfu.close()


# -- Chromium with UDP blocked --------------------------------------------------------------


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["iptables", "-w", "5", *args], capture_output=True, text=True, timeout=20, check=False
    )


@contextlib.contextmanager
def udp_blocked(port: int, except_from: int) -> Iterator[Callable[[], int]]:
    """Drop UDP on ``lo`` to 127.0.0.1:port except from source port ``except_from``;
    yield a function that counts the packets the rule has dropped.

    The rule carries a unique comment and is deleted by it on the way out, whatever
    happened in between.
    """
    comment = f"visavis-test-{secrets.token_hex(6)}"
    rule = [
        "INPUT", "-i", "lo", "-p", "udp", "-d", "127.0.0.1", "--dport", str(port),
        "!", "--sport", str(except_from), "-m", "comment", "--comment", comment, "-j", "DROP",
    ]  # fmt: skip
    added = _iptables("-I", *rule)
    if added.returncode != 0:
        pytest.skip(f"iptables cannot add a rule here: {added.stderr.strip()}")

    def dropped() -> int:
        listed = _iptables("-L", "INPUT", "-v", "-x", "-n").stdout.splitlines()
        return sum(int(line.split()[0]) for line in listed if comment in line)

    try:
        yield dropped
    finally:
        for _ in range(10):  # bounded: delete every rule with our comment
            listed = _iptables("-S", "INPUT").stdout.splitlines()
            mine = [line for line in listed if comment in line]
            if not mine:
                break
            _iptables("-D", *mine[0].split()[1:])
        assert not any(comment in line for line in _iptables("-S", "INPUT").stdout.splitlines())


@pytest.mark.browser
@pytest.mark.interop
async def test_chromium_falls_back_to_ice_tcp_when_udp_is_blocked(
    sfu: SfuServer, token: Callable[..., str]
) -> None:
    from tests.sfu.test_sfu_chromium import ARGS, CHROMIUM, HAVE_CHROMIUM, page_server

    playwright_api = pytest.importorskip("playwright.async_api")
    if not HAVE_CHROMIUM:
        pytest.skip("Debian chromium is not installed")
    if shutil.which("iptables") is None:
        pytest.skip("iptables is not installed")
    assert sfu.tcp_port is not None
    alice = SfuSession(sfu.control_url, token("alice"), audio=ToneTrack(0.3), video=PatternTrack())
    try:
        await alice.join()
        room = next(iter(sfu.rooms.values()))
        alice_transport = room.participants[alice.participant_id or ""].transport

        async def alice_on_udp() -> Any:
            return alice_transport.address if isinstance(alice_transport.address, tuple) else None

        alice_port = (await until_async(alice_on_udp, "alice's UDP path", 10, every=0.25))[1]
        with udp_blocked(sfu.media_port, except_from=alice_port) as firewall_drops:
            # The rule works: a datagram from any other socket is dropped by the kernel
            # (its counter says so) and never reaches the SFU.
            garbage = sfu.stats.dropped["garbage"]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.sendto(b"\xff probe", ("127.0.0.1", sfu.media_port))
            await until(lambda: firewall_drops() >= 1, "the firewall rule drops the probe")
            assert sfu.stats.dropped["garbage"] == garbage
            async with playwright_api.async_playwright() as p:
                browser = await p.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=ARGS
                )
                try:
                    with page_server() as url:
                        page = await browser.new_page()
                        await page.goto(url)
                        await page.evaluate(
                            "([u, t]) => run(u, t)", [sfu.control_url, token("chrome")]
                        )

                        async def chrome_decodes_alice() -> bool:
                            got = (await page.evaluate("received()")).get(alice.participant_id, {})
                            return bool(got.get("video", 0) >= 20 and got.get("audio", 0) > 0)

                        await until_async(
                            chrome_decodes_alice,
                            "Chromium to decode alice over TCP",
                            40,
                            every=0.25,
                        )
                        chrome_id = await page.evaluate("window.state.participant_id")
                        await alice.wait_for(lambda: alice.frames[chrome_id]["video"] >= 20, 30)
                        await alice.wait_for(lambda: alice.frames[chrome_id]["audio"] >= 10, 10)

                        # Chromium's selected pair is ICE-TCP to the SFU's passive candidate.
                        pair = await page.evaluate("selectedPair()")
                        assert pair is not None, "no selected candidate pair"
                        assert pair["local"]["protocol"] == "tcp", pair
                        assert pair["local"]["tcpType"] == "active", pair
                        assert pair["remote"]["protocol"] == "tcp", pair
                        assert pair["remote"]["port"] == sfu.tcp_port, pair
                        assert pair["bytesSent"] > 0 and pair["bytesReceived"] > 0, pair
                        # The SFU sends to Chromium on that TCP connection; alice stays on UDP.
                        chrome = room.participants[chrome_id]
                        assert isinstance(chrome.transport.address, IceTcpConnection)
                        assert chrome.transport.connected
                        assert alice_transport.address == ("127.0.0.1", alice_port)
                        assert sfu.stats.tcp_connections >= 1
                        assert not (await page.evaluate("window.state.errors"))
                finally:
                    await browser.close()
    finally:
        await alice.close()
