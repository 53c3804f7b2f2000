"""The presence heartbeat, in batches: every attached device stays online, and a device
whose mailbox is ahead of what was sent to it (a pub/sub wake-up lost) gets it flushed;
the others cost no mailbox read."""

from __future__ import annotations

from typing import Any

from starlette.websockets import WebSocketState

from visavis.bus.memory import MemoryBus
from visavis.clock import SystemClock
from visavis.signaling.hub import Connection, Hub
from visavis.signaling.metrics import SignalingMetrics


class FakeSocket:
    application_state = WebSocketState.CONNECTED

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_json(self, data: dict[str, Any]) -> None:
        self.sent.append(data)


async def test_heartbeat_refreshes_presence_and_flushes_only_devices_behind() -> None:
    now = [1000.0]
    bus = MemoryBus(lambda: now[0])
    await bus.open()
    hub = Hub(
        bus=bus,
        clock=SystemClock(),
        node_id="n1",
        grace=60,
        presence_ttl=45,
        metrics=SignalingMetrics(),
    )
    sockets = {f"d{i}": FakeSocket() for i in range(3)}
    conns = {d: Connection(ws, d, 0) for d, ws in sockets.items()}  # type: ignore[arg-type]
    for conn in conns.values():
        await hub.attach(conn)
    # A message appended behind the hub's back: no wake-up reaches the connection.
    await bus.mailbox_append("d1", {"type": "call.ringing", "call_id": "c"}, ttl=60)
    conns["d1"].subscription = None  # as if the pub/sub wake-up was lost
    reads: list[str] = []
    original = bus.mailbox_read

    async def counted(device_id: str, after: int) -> Any:
        reads.append(device_id)
        return await original(device_id, after)

    bus.mailbox_read = counted  # type: ignore[method-assign]
    now[0] += 40  # presence (45 s) nearly due
    await hub.heartbeat()
    now[0] += 40  # 80 s after attach: online only thanks to the heartbeat at 40 s
    assert await bus.online(list(sockets)) == set(sockets)
    assert reads == ["d1"]  # only the device that was behind was read
    assert [m["type"] for m in sockets["d1"].sent] == ["call.ringing"]
    assert sockets["d1"].sent[0]["seq"] == 1 and conns["d1"].last_sent == 1
    assert sockets["d0"].sent == [] and sockets["d2"].sent == []
    await bus.close()
