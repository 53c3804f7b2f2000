"""What a device sees of a deployment, checked from inside its network namespace.

    python -m tests.deploy_probe --signaling URL [--sfu URL] --secret S \\
        --hosts '{"call.example.org": "10.0.0.7"}' --cafile cert.pem

Signs up and signs in (once ``/readyz`` answers), reads the ``welcome`` message's ICE
servers, then uses each of them with the credentials signaling handed out: STUN Binding
for ``stun:``, a TURN Allocate over UDP, TCP or TLS (verifying the certificate against the
URL's host name) for ``turn:``/``turns:``. With ``--sfu``, joins a room with a token signed
by the shared secret, offers to publish, and reads the ICE candidates of the answer.
Host names resolve through ``--hosts`` (the namespace has no DNS). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import socket
import ssl
import time
from typing import Any

import httpx
import websockets

from visavis.protocol.stun import (
    ErrorCodeAttr,
    Message,
    MessageClass,
    Method,
    Nonce,
    Realm,
    RequestedTransport,
    Username,
    XorMappedAddress,
    XorRelayedAddress,
    encode_message,
    long_term_key,
    parse_message,
)
from visavis.protocol.turn import StreamFramer
from visavis.tokens import sign_token

PASSWORD = "deployment probe password"


async def wait_ready(base: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as http:
        while True:
            try:
                if (await http.get(f"{base}/readyz", timeout=2)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{base}/readyz never answered 200")
            await asyncio.sleep(0.05)  # polling interval of a readiness wait


async def welcome(base: str) -> dict[str, Any]:
    handle = f"probe-{secrets.token_hex(3)}@example.org"
    async with httpx.AsyncClient(base_url=base, timeout=20) as http:
        r = await http.post("/api/signup", json={"handle": handle, "password": PASSWORD})
        r.raise_for_status()
        r = await http.post(
            "/api/login", json={"handle": handle, "password": PASSWORD, "device_name": "probe"}
        )
        r.raise_for_status()
        token = r.json()["token"]
    ws_url = base.replace("http", "ws", 1) + "/ws"
    async with websockets.connect(ws_url) as ws:
        await ws.send(json.dumps({"type": "hello", "token": token}))
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 20))
    return message


class Turn:
    """Just enough of a TURN client: one request at a time, long-term credentials."""

    def __init__(self, username: str, password: str) -> None:
        self.username, self.password = username, password
        self.realm, self.nonce, self.key = "", "", b""
        self.n = 0

    def request(self, method: int, attrs: list[Any]) -> bytes:
        self.n += 1
        tid = self.n.to_bytes(12, "big")
        if not self.nonce:
            return encode_message(method, MessageClass.REQUEST, tid, attrs)
        full = [*attrs, Username(self.username), Realm(self.realm), Nonce(self.nonce)]
        return encode_message(method, MessageClass.REQUEST, tid, full, key=self.key)

    def challenged(self, answer: Message) -> bool:
        err, realm, nonce = answer.get(ErrorCodeAttr), answer.get(Realm), answer.get(Nonce)
        if err is None or err.code not in (401, 438) or nonce is None or self.nonce:
            return False
        self.realm = realm.value if realm else self.realm
        self.nonce = nonce.value
        self.key = long_term_key(self.username, self.realm, self.password)
        return True


def _address(msg: Message, kind: Any) -> list[Any] | None:
    attr = msg.get(kind)
    return None if attr is None else [str(attr.ip), attr.port]


async def use_server(url: str, username: str, password: str, hosts: dict[str, str],
                     cafile: str | None) -> dict[str, Any]:  # fmt: skip
    """STUN Binding or TURN Allocate against one ICE URL, as a browser would use it."""
    scheme, rest = url.split(":", 1)
    hostport, _, query = rest.partition("?")
    name, _, port_text = hostport.rpartition(":")
    host = hosts.get(name, name)
    port = int(port_text)
    transport = "tcp" if scheme == "turns" or "transport=tcp" in query else "udp"
    turn = Turn(username, password)
    attrs: list[Any] = [] if scheme == "stun" else [RequestedTransport(17)]
    method = Method.BINDING if scheme == "stun" else Method.ALLOCATE
    for _ in range(2):
        data = turn.request(method, attrs)
        if transport == "udp":
            answer = await _udp_exchange(host, port, data)
        else:
            context = None
            if scheme == "turns":
                context = ssl.create_default_context(cafile=cafile)
            answer = await _stream_exchange(host, port, data, context, name)
        if scheme != "stun" and turn.challenged(answer):
            continue
        break
    err = answer.get(ErrorCodeAttr)
    return {
        "ok": answer.cls == MessageClass.SUCCESS,
        "error": None if err is None else err.code,
        "mapped": _address(answer, XorMappedAddress),
        "relayed": _address(answer, XorRelayedAddress),
    }


async def _udp_exchange(host: str, port: int, data: bytes) -> Message:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for _ in range(5):  # retransmit like a STUN client (RFC 8489 6.2.1)
            await loop.sock_sendto(sock, data, (host, port))
            try:
                return parse_message(await asyncio.wait_for(loop.sock_recv(sock, 2048), 1.0))
            except TimeoutError:
                continue
    raise TimeoutError(f"no answer from udp {host}:{port}")


async def _stream_exchange(
    host: str, port: int, data: bytes, context: ssl.SSLContext | None, name: str
) -> Message:
    reader, writer = await asyncio.open_connection(
        host, port, ssl=context, server_hostname=name if context else None
    )
    try:
        writer.write(data)
        framer = StreamFramer()
        while True:
            chunk = await asyncio.wait_for(reader.read(4096), 10)
            if not chunk:
                raise ConnectionError(f"{host}:{port} closed")
            frames = framer.feed(chunk)
            if frames:
                return parse_message(frames[0])
    finally:
        writer.close()


def publish_offer() -> str:
    common = ["a=ice-ufrag:prob", "a=ice-pwd:probeprobeprobeprobeprobe",
              "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=setup:actpass"]  # fmt: skip
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE a",
             "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", "a=mid:a",
             "a=sendonly", "a=rtcp-mux", *common, "a=rtpmap:111 opus/48000/2",
             "a=ssrc:1234 cname:probe"]  # fmt: skip
    return "\r\n".join(lines) + "\r\n"


async def sfu_candidates(url: str, secret: str) -> list[str]:
    claims = {"room": "probe-room", "call": "probe-call", "user": "probe", "device": "d1"}
    token = sign_token(secret, claims, now=time.time(), ttl=60)
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "join", "token": token}))
        joined = json.loads(await asyncio.wait_for(ws.recv(), 20))
        if joined.get("type") != "joined":
            raise RuntimeError(f"SFU refused the join: {joined}")
        await ws.send(json.dumps({"type": "offer", "sdp": publish_offer()}))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if message.get("type") == "answer":
                sdp: str = message["sdp"]
                return [line for line in sdp.splitlines() if line.startswith("a=candidate:")]
            if message.get("type") == "error":
                raise RuntimeError(f"SFU error: {message}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--signaling")
    parser.add_argument("--sfu")
    parser.add_argument("--secret", default="")
    parser.add_argument("--hosts", default="{}")
    parser.add_argument("--cafile")
    args = parser.parse_args()
    hosts: dict[str, str] = json.loads(args.hosts)
    report: dict[str, Any] = {}
    if args.signaling:
        await wait_ready(args.signaling)
        hello = await welcome(args.signaling)
        report["welcome"] = hello
        servers: dict[str, Any] = {}
        for server in hello.get("ice_servers", []):
            for url in server["urls"]:
                servers[url] = await use_server(
                    url, server.get("username") or "", server.get("credential") or "", hosts,
                    args.cafile,
                )  # fmt: skip
        report["ice"] = servers
    if args.sfu:
        report["sfu_candidates"] = await sfu_candidates(args.sfu, args.secret)
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main())
