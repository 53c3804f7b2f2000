"""Run one SFU alone: ``python -m visavis.sfu`` (settings from ``VISAVIS_*``).

Prints one JSON line ``{"control_url", "media_port", "tcp_port"}`` when ready. Each
``stats`` line on stdin prints a JSON line of counters and of which media libraries the process ever
imported (``decoder_modules``: the SFU never loads a codec); ``stop``, end of stdin or
SIGTERM prints it once more and exits. Used by the
no-decode test and the benchmark; ``visavis serve --role sfu`` is the operator's way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import sys

from visavis.config import Settings
from visavis.sfu.server import SfuServer

CODEC_MODULES = ("av", "aiortc", "aiortc.codecs", "cv2")


async def _main() -> None:
    server = SfuServer(Settings())
    await server.start()
    ready = {
        "control_url": server.control_url,
        "media_port": server.media_port,
        "tcp_port": server.tcp_port,
    }
    print(json.dumps(ready), flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def report() -> None:
        data = dataclasses.asdict(server.stats)
        data["decoder_modules"] = [m for m in CODEC_MODULES if m in sys.modules]
        print(json.dumps(data), flush=True)

    def command() -> None:
        line = sys.stdin.readline()
        if line.strip() == "stats":
            report()
        else:
            stop.set()

    loop.add_reader(sys.stdin.fileno(), command)
    await stop.wait()
    loop.remove_reader(sys.stdin.fileno())
    await server.close()
    report()


if __name__ == "__main__":
    try:  # the loop `visavis serve` runs on (visavis.cli._run)
        import uvloop
    except ImportError:
        asyncio.run(_main())
    else:
        uvloop.run(_main())
