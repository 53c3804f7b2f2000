"""Write the seed inputs of every target: small valid messages made with our encoders.

``python -m fuzz.seeds`` writes ``seed-*`` files into ``fuzz/corpus/<target>/`` (existing
files are kept). Fuzzing starts from these, and a minimised corpus is committed.
"""

from __future__ import annotations

import hashlib
import json

from fuzz.contract import CORPUS_ROOT
from visavis.protocol.rtp import RtpPacket
from visavis.protocol.rtp.rtcp import (
    ReportBlock,
    RtcpBye,
    RtcpFir,
    RtcpNack,
    RtcpPli,
    RtcpRemb,
    RtcpRr,
    RtcpSdes,
    RtcpSr,
)
from visavis.protocol.stun import (
    ChannelNumber,
    ErrorCodeAttr,
    IceControlling,
    Lifetime,
    MessageClass,
    Method,
    Nonce,
    Priority,
    Realm,
    RequestedTransport,
    Software,
    UseCandidate,
    Username,
    XorMappedAddress,
    XorPeerAddress,
    encode_message,
)
from visavis.protocol.turn import encode_channel_data

TID = bytes(range(12))


def _stun() -> list[bytes]:
    binding = encode_message(Method.BINDING, MessageClass.REQUEST, TID, [], fingerprint=True)
    ice = encode_message(
        Method.BINDING,
        MessageClass.REQUEST,
        TID,
        [Username("sfuf:abcd"), Priority(1853817087), IceControlling(42), UseCandidate()],
        key=b"sfu-password-of-22-chars",
        fingerprint=True,
    )
    allocate = encode_message(
        Method.ALLOCATE,
        MessageClass.REQUEST,
        TID,
        [RequestedTransport(17), Lifetime(600), Username("user"), Realm("visavis"), Nonce("n")],
        key=b"k" * 16,
        integrity="both",
    )
    response = encode_message(
        Method.BINDING,
        MessageClass.SUCCESS,
        TID,
        [XorMappedAddress.of("192.0.2.7", 40000), Software("visavis")],
        fingerprint=True,
    )
    error = encode_message(
        Method.ALLOCATE, MessageClass.ERROR, TID, [ErrorCodeAttr(401, "Unauthorized")]
    )
    bind = encode_message(
        Method.CHANNEL_BIND,
        MessageClass.REQUEST,
        TID,
        [ChannelNumber(0x4001), XorPeerAddress.of("2001:db8::1", 5000)],
    )
    return [binding, ice, allocate, response, error, bind]


def _rtp() -> list[bytes]:
    plain = RtpPacket(96, 1000, 90000, 0x11223344, payload=b"\x10\x00\x00\x9d\x01\x2a")
    ext = RtpPacket(
        111,
        2,
        960,
        5,
        marker=True,
        csrcs=(7, 8),
        extensions={1: b"0", 3: b"\x8a"},
        payload=b"opus",
    )
    two_byte = RtpPacket(100, 3, 3, 3, extensions={20: b"x" * 20}, payload=b"\x90\x80\x05\x00")
    return [plain.serialize(), ext.serialize(), two_byte.serialize()]


def _rtcp() -> list[bytes]:
    block = ReportBlock(0x1111, 25, -3, 70000, 12, 0xABCD, 65536)
    sr = RtcpSr(1, 0x0102030405060708, 90000, 10, 1000, (block,)).serialize()
    sdes = RtcpSdes(((5, ((1, b"cname@x"),)),)).serialize()
    return [
        sr + sdes,
        RtcpRr(2, (block, block)).serialize(),
        RtcpBye((1, 2, 3)).serialize(),
        RtcpNack(1, 2, (10, 11, 26, 100)).serialize() + RtcpPli(7, 8).serialize(),
        RtcpFir(1, ((2, 3),)).serialize(),
        RtcpRemb(1, 800_000, (4,)).serialize(),
        bytes([0x8F, 205, 0, 4]) + bytes.fromhex("00000001000000020005000300000101"),
    ]


def _offer(simulcast: bool) -> bytes:
    common = [
        "a=ice-ufrag:u1x2",
        "a=ice-pwd:client-password-22-chars",
        "a=fingerprint:sha-256 " + ":".join(["CD"] * 32),
        "a=setup:actpass",
        "a=rtcp-mux",
    ]
    lines = ["v=0", "o=- 46117 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE a v s0"]
    lines += [
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 0",
        "c=IN IP4 0.0.0.0",
        "a=mid:a",
        "a=sendonly",
        *common,
        "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=rtcp-fb:111 transport-cc",
        "a=rtpmap:0 PCMU/8000",
        "a=ssrc:1001 cname:x",
        "a=msid:stream track-a",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
        "a=mid:v",
        "a=sendonly",
        *common,
        "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        "a=extmap:5 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
        "a=rtpmap:96 VP8/90000",
        "a=rtcp-fb:* nack",
        "a=rtcp-fb:96 nack pli",
        "a=rtpmap:97 rtx/90000",
        "a=fmtp:97 apt=96",
    ]
    if simulcast:
        lines += ["a=rid:q send", "a=rid:h send", "a=rid:f send", "a=simulcast:send q;h;f"]
    else:
        lines += ["a=ssrc-group:FID 2001 2002", "a=ssrc:2001 cname:x", "a=ssrc:2002 cname:x"]
    lines += [
        "m=video 9 UDP/TLS/RTP/SAVPF 100 101",
        "a=mid:s0",
        "a=recvonly",
        *common,
        "a=rtpmap:100 VP8/90000",
        "a=rtpmap:101 rtx/90000",
        "a=fmtp:101 apt=100",
        "m=application 0 UDP/DTLS/SCTP webrtc-datachannel",
        "a=mid:d",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def _signaling() -> list[bytes]:
    messages: list[object] = [
        {"type": "hello", "token": "t" * 40, "resume_after": 3},
        {"type": "ping", "id": 1},
        {"type": "ack", "seq": 10},
        {"type": "call.invite", "id": "a", "handles": ["bob@example.com", "+15551234567"]},
        {"type": "call.answer", "call_id": "c1", "end_current": True},
        {"type": "call.ring_again", "call_id": "c1", "handle": "Carol@Example.com"},
        {
            "type": "call.signal",
            "call_id": "c1",
            "description": {"type": "offer", "sdp": "v=0\r\n"},
            "candidate": {"candidate": "candidate:1 1 udp 1 192.0.2.1 9 typ host", "sdpMid": "0"},
        },
        {"type": "call.add", "call_id": "c1", "handles": ["dave@example.org"]},
        {"handle": "alice@example.com", "password": "correct horse", "device_name": "laptop"},
        {"endpoint": "https://push.example/x", "keys": {"p256dh": "k", "auth": "a"}},
    ]
    return [json.dumps(msg).encode() for msg in messages]


def _sfu() -> list[bytes]:
    messages: list[object] = [
        {"type": "join", "token": "eyJ.x.y"},
        {"type": "offer", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"},
        {"type": "layout", "visible": ["p1", "p2"]},
        {"type": "leave"},
    ]
    return [json.dumps(msg).encode() for msg in messages]


def _step(op: int, payload: bytes = b"") -> bytes:
    """One step of an ``sfu_native`` script: op, 2-byte length, payload."""
    return bytes((op,)) + len(payload).to_bytes(2, "big") + payload


def _sfu_native() -> list[bytes]:
    """Scripts for the native fast path (see fuzz/targets/sfu_native.py): a publisher's
    simulcast video (VP8 keyframes, then deltas), audio with levels, an SSRC Python
    learns, RTCP, STUN and DTLS for Python, strays, layer switches, a mute; and a
    garbage script (truncated headers, oversize datagrams, bad extension lengths)."""
    stun = _stun()[1]
    dtls = bytes.fromhex("16fefd000000000000000000050100000000")

    def vp8(key: bool) -> bytes:
        return bytes((0x10, 0x00 if key else 0x01, 0x9D, 0x01, 0x2A)) + bytes(40)

    def media(profile_bit: int, new_ssrc: bool) -> bytes:
        script = bytes((profile_bit | 2 << 1 | 1 << 3 | 0 << 5,))  # targets 2, 1, 0
        for frame in range(6):
            key = frame % 3 == 0
            for layer in range(3):
                packet = RtpPacket(
                    96,
                    100 * layer + frame,
                    3000 * frame,
                    0,
                    marker=True,
                    extensions={4: b"qhf"[layer : layer + 1]},
                    payload=vp8(key),
                )
                script += _step(1 | layer << 3, packet.serialize())
            audio = RtpPacket(
                111, frame, 960 * frame, 0, extensions={1: bytes((0x80 | 30,))}, payload=b"opus" * 8
            )
            script += _step(1 | 3 << 3, audio.serialize())
            if new_ssrc:
                script += _step(
                    1 | 4 << 3, RtpPacket(96, 7 + frame, 0, 0, payload=vp8(key)).serialize()
                )
            script += _step(7, b"\x08") + _step(6)
        script += _step(2, RtcpRr(1, ()).serialize()) + _step(0, stun) + _step(0, dtls)
        script += _step(3, RtpPacket(96, 1, 1, 1000, payload=b"x").serialize())
        script += _step(5 | 1 << 3, b"\x00") + _step(5 | 3 << 3, bytes((128 + 20,)))
        script += _step(4, RtpPacket(96, 50, 1, 0, payload=vp8(True)).serialize())
        script += _step(4 | 3 << 3, RtpPacket(111, 50, 1, 0, payload=b"quiet").serialize())
        return script

    garbage = bytes((0x7F,)) + b"".join(
        (
            _step(1, bytes.fromhex("9f60000100000001000003e8")),  # CC=15, nothing follows
            _step(1, bytes.fromhex("9060000200000002000003e8bede00ff") + bytes(8)),
            _step(4, bytes.fromhex("906000030000000300000000bede0001")),
            _step(0, bytes(5000)),  # over the receive buffer: truncated, garbage
            _step(0, b"\x80"),
            _step(3, b"\x81\xc9" + bytes(30)),
            _step(4, b"\x80\x60"),
            _step(6),
        )
    )
    codecs = []  # VP9 (descriptor B bit), H.264 (IDR NAL), AV1 (aggregation header N bit)
    for codec, key, delta in ((1, 0x08, 0x48), (2, 0x65, 0x41), (3, 0x08, 0x00)):
        script = bytes((codec % 2 | 2 << 1,)) + _step(5 | 4 << 3, bytes((codec,)))
        script += _step(5 | 8 << 3, b"\x06") + _step(5 | 16 << 3, b"\x01")  # dd id 5, T1
        for frame in range(4):
            for layer in range(3):
                first = key if frame == 0 else delta
                packet = RtpPacket(
                    96,
                    10 * layer + frame,
                    3000 * frame,
                    0,
                    marker=True,
                    payload=bytes((first,)) + bytes(30),
                )
                script += _step(1 | layer << 3, packet.serialize())
            script += _step(6)
        codecs.append(script)
    return [media(0, False), media(1, True), garbage, *codecs]


def _stream(frames: list[bytes], chunk: int) -> bytes:
    return bytes([chunk - 1]) + b"".join(frames)


def seeds() -> dict[str, list[bytes]]:
    stun = _stun()
    channel = [encode_channel_data(0x4001, b"hello"), encode_channel_data(0x7FFE, b"", pad=True)]
    turn_frames = [encode_channel_data(0x4000, b"media", pad=True), stun[2], stun[0]]
    rfc4571 = [len(p).to_bytes(2, "big") + p for p in (stun[1], *_rtp())]
    return {
        "stun": stun,
        "ice_lite": stun[:2],
        "channel_data": channel,
        "turn_stream": [_stream(turn_frames, 1), _stream(turn_frames, 7)],
        "rtp": _rtp(),
        "rtcp": _rtcp(),
        "rfc4571": [_stream(rfc4571, 3), _stream(rfc4571, 64)],
        "sdp": [_offer(False), _offer(True)],
        "signaling_json": _signaling(),
        "sfu_json": _sfu(),
        "sfu_native": _sfu_native(),
    }


def main() -> None:
    for name, inputs in seeds().items():
        directory = CORPUS_ROOT / name
        directory.mkdir(parents=True, exist_ok=True)
        for data in inputs:
            (directory / f"seed-{hashlib.sha1(data).hexdigest()[:16]}").write_bytes(data)
        print(f"{name}: {len(inputs)} seeds")


if __name__ == "__main__":
    main()
