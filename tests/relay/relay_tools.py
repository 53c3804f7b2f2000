"""Parsing turnutils_uclient output; a datagram receive that works on every event loop."""

from __future__ import annotations

import asyncio
import re
import socket
from typing import Any


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
