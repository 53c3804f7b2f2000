"""An aiortc viewer for tests that run it in another network namespace:
``python -m tests.sfu.remb_viewer URL TOKEN`` joins the SFU room receive-only (REMB, no
TWCC: what aiortc offers) and prints one JSON line every 0.25 s: the last decoded video
size and the count of decoded video frames of each participant."""

from __future__ import annotations

import asyncio
import json
import sys

from visavis.client.sfu_session import SfuSession


async def main(url: str, token: str) -> None:
    session = SfuSession(url, token)
    await session.join(30)
    try:
        while True:
            line = {
                "sizes": {who: list(size) for who, size in session.video_size.items()},
                "frames": {who: n["video"] for who, n in session.frames.items()},
            }
            print(json.dumps(line), flush=True)
            await asyncio.sleep(0.25)  # a report cadence, not a wait for readiness
    finally:
        await session.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
