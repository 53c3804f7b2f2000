"""SFrame encrypt/decrypt throughput in Debian's Chromium (web/e2ee on WebCrypto), in a
module worker as the media transforms run it, next to the Python figures.

    python benchmarks/sframe_chromium.py                 # 5 runs per cell, medians
    python benchmarks/sframe_chromium.py --runs 3 --seconds 0.5

For each frame size it times ``encryptFrame`` (clear VP8/Opus prefix, SFrame header,
AES-128-GCM, the default suite) and ``decryptFrame`` (header, replay window, AEAD) one
frame after another (a transform stream handles one frame at a time), for ``--seconds``
per run, and prints the median frames/s and MB/s; then the same cells for Python
(benchmarks/sframe.py ``measure``). The budget line is the issue's: one 1080p30 stream
sent plus 31 received (10 kB frames), as a share of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from sframe import SIZES, measure  # noqa: E402
from tests.browser import chromium as debian_chromium  # noqa: E402
from tests.browser import static_site  # noqa: E402

from visavis.protocol.sframe import CipherSuite  # noqa: E402
from visavis.signaling.web import WEB_DIR  # noqa: E402

WORKER = """async ([size, seconds]) => {
  const src = `import { Context, SendKey } from "${location.origin}/e2ee/sframe.js";
    import { encryptFrame, decryptFrame } from "${location.origin}/e2ee/frames.js";
    onmessage = async (e) => {
      const [size, seconds] = e.data;
      const codec = size < 1000 ? "opus" : "vp8";
      const frame = crypto.getRandomValues(new Uint8Array(size));
      frame[0] = 0x01;  // VP8 delta frame / an Opus TOC byte
      const key = crypto.getRandomValues(new Uint8Array(32));
      const sender = await SendKey.create(0x100n, key);
      const receiver = new Context();
      await receiver.addKey(0x100n, key);
      const sealed = [];
      let t0 = performance.now();
      while (performance.now() - t0 < seconds * 1000) {
        sealed.push(await encryptFrame(sender, codec, frame));
      }
      const enc = sealed.length / ((performance.now() - t0) / 1000);
      t0 = performance.now();
      let out = null;
      for (const data of sealed) out = await decryptFrame(receiver, codec, data);
      const dec = sealed.length / ((performance.now() - t0) / 1000);
      if (out.length !== size || out[size - 1] !== frame[size - 1]) throw new Error("mismatch");
      postMessage([enc, dec]);
    };`;
  const url = URL.createObjectURL(new Blob([src], { type: "text/javascript" }));
  const worker = new Worker(url, { type: "module" });
  const result = await new Promise((resolve, reject) => {
    worker.onmessage = (e) => resolve(e.data);
    worker.onerror = (e) => reject(new Error(e.message));
    worker.postMessage([size, seconds]);
  });
  worker.terminate();
  return result;
}"""


async def chromium(seconds: float, runs: int) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    with static_site(WEB_DIR) as base:
        async with debian_chromium() as browser:
            page = await browser.new_page()
            await page.goto(base + "/e2ee/sframe.js")
            for label, size in SIZES.items():
                rates = [await page.evaluate(WORKER, [size, seconds]) for _ in range(runs)]
                out[label] = (
                    statistics.median(r[0] for r in rates),
                    statistics.median(r[1] for r in rates),
                )
    return out


def budget(enc: float, dec: float) -> float:
    """Seconds of CPU per second: 30 frames/s sent, 31 x 30 frames/s received."""
    return 30 / enc + 31 * 30 / dec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    load = os.getloadavg()
    browser = asyncio.run(chromium(args.seconds, args.runs))
    suite = CipherSuite.AES_128_GCM_SHA256_128
    print(f"AES_128_GCM_SHA256_128, medians of {args.runs} runs; load {load[0]:.1f}")
    print(
        f"{'where':9} {'frame':22} {'enc fr/s':>10} {'enc MB/s':>9} "
        f"{'dec fr/s':>10} {'dec MB/s':>9}"
    )
    shares = {}
    for label, size in SIZES.items():
        py = measure(suite, size, args.seconds, args.runs)
        for where, (enc, dec) in (("chromium", browser[label]), ("python", py)):
            print(
                f"{where:9} {label:22} {enc:10.0f} {enc * size / 1e6:9.1f} {dec:10.0f} "
                f"{dec * size / 1e6:9.1f}"
            )
            if size == 10_000:
                shares[where] = budget(enc, dec)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print("\nbudget (1080p30: 1 stream sent + 31 received, 10 kB frames), share of one core:")
    for where, share in shares.items():
        verdict = "PASS" if share < 0.10 else "FAIL"
        print(f"  {where:9} {share * 100:5.1f} %  (limit 10 %: {verdict})")


if __name__ == "__main__":
    main()
