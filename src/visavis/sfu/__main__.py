"""Run one SFU alone: ``python -m visavis.sfu`` (settings from ``VISAVIS_*``).

Prints one JSON line ``{"control_url", "media_port"}`` when ready; on end of stdin (or
SIGTERM) prints a JSON line of counters and of which media libraries the process ever
imported (``decoder_modules``: the SFU never loads a codec), then exits. Used by the
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
    print(
        json.dumps({"control_url": server.control_url, "media_port": server.media_port}), flush=True
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), stop.set)  # any line, or EOF, stops
    await stop.wait()
    report = dataclasses.asdict(server.stats)
    report["decoder_modules"] = [m for m in CODEC_MODULES if m in sys.modules]
    await server.close()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    asyncio.run(_main())
