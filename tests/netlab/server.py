"""Signaling + STUN/TURN for the NAT lab, run inside the lab's public namespace.

    python -m tests.netlab.server DATA_DIR  → prints "READY <signaling url>" when listening
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from visavis.config import Settings
from visavis.relay.server import RelayServer
from visavis.signaling.server import SignalingServer

from .lab import PUBLIC_NET, SERVER_IP


async def main(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir, shared_secret="netlab-secret", log_level="warning")
    settings.signaling.host = SERVER_IP
    settings.signaling.port = 8080
    settings.signaling.rate_limit_per_second = 200
    settings.signaling.rate_limit_burst = 400
    settings.relay.listening_ip = [SERVER_IP]
    settings.relay.listening_port = 3478
    settings.relay.allowed_peer_ip = [PUBLIC_NET]  # 198.18/15 is denied by default
    relay = RelayServer(settings)
    await relay.start()
    signaling = SignalingServer(settings, ice_urls=relay.endpoints)
    await signaling.start()
    print("READY", signaling.url, " ".join(relay.endpoints()), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await signaling.close()
    await relay.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
