"""Parsing turnutils_uclient output; a small TURN client over a stream connection; a
datagram receive that works on every event loop."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl as ssl_module
from typing import Any

from visavis.protocol.stun import (
    ErrorCodeAttr,
    Message,
    MessageClass,
    Nonce,
    Realm,
    Username,
    encode_message,
    long_term_key,
    parse_message,
)
from visavis.protocol.turn import StreamFramer


async def recvfrom(sock: socket.socket, size: int) -> tuple[bytes, Any]:
    """``loop.sock_recvfrom`` for any loop: uvloop, which the relay runs on, lacks it."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[tuple[bytes, Any]] = loop.create_future()

    def readable() -> None:
        if got.done():
            return
        try:
            got.set_result(sock.recvfrom(size))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            got.set_exception(exc)

    loop.add_reader(sock.fileno(), readable)
    try:
        return await got
    finally:
        loop.remove_reader(sock.fileno())


def uclient_totals(output: str) -> tuple[int, int, int]:
    """(sent, received, lost) from turnutils_uclient's summary lines."""
    sent = recv = -1
    for m in re.finditer(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$", output, re.M):
        sent, recv = int(m.group(1)), int(m.group(2))
    lost_m = re.search(r"Total lost packets (\d+)", output)
    lost = int(lost_m.group(1)) if lost_m else -1
    return sent, recv, lost


class StreamClient:
    """A minimal TURN client over one TCP (or TLS) control connection, long-term auth."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, realm: str,
        username: str = "user", password: str = "pass",
    ) -> None:  # fmt: skip
        self.reader, self.writer = reader, writer
        self.realm, self.username = realm, username
        self.key = long_term_key(username, realm, password)
        self.framer = StreamFramer()
        self.frames: list[bytes] = []
        self.nonce = ""
        self.n = 0

    @classmethod
    async def open(
        cls, port: int, realm: str, ssl: ssl_module.SSLContext | None = None
    ) -> StreamClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl)
        return cls(reader, writer, realm)

    async def frame(self, within: float = 5.0) -> bytes:
        while not self.frames:
            data = await asyncio.wait_for(self.reader.read(65536), within)
            if not data:
                raise ConnectionError("the relay closed the control connection")
            self.frames.extend(self.framer.feed(data))
        return self.frames.pop(0)

    async def request(self, method: int, attrs: list[Any]) -> Message:
        """Send a request (answering the 401 challenge once); return the response."""
        for _ in range(2):
            self.n += 1
            tid = self.n.to_bytes(12, "big")
            if self.nonce:
                full = [*attrs, Username(self.username), Realm(self.realm), Nonce(self.nonce)]
                data = encode_message(method, MessageClass.REQUEST, tid, full, key=self.key)
            else:
                data = encode_message(method, MessageClass.REQUEST, tid, attrs)
            self.writer.write(data)
            while True:
                msg = parse_message(await self.frame())
                if msg.transaction_id == tid:
                    break
            err, nonce = msg.get(ErrorCodeAttr), msg.get(Nonce)
            challenged = err is not None and err.code in (401, 438)
            if challenged and nonce is not None and nonce.value != self.nonce:
                self.nonce = nonce.value
                continue
            return msg
        return msg

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ssl_module.SSLError):
            await self.writer.wait_closed()


def error_code(msg: Message) -> int | None:
    err = msg.get(ErrorCodeAttr)
    return None if err is None else err.code
