"""SFrame encrypt/decrypt throughput in Python (visavis.e2ee on `cryptography`).

    python benchmarks/sframe.py            # every suite, 1080p-sized and audio frames
    python benchmarks/sframe.py --runs 5 --seconds 1

For each cipher suite and frame size it times ``Keyring.encrypt`` (clear VP8/Opus
prefix, header, AEAD) and ``Keyring.decrypt`` (header, replay window, AEAD) over as many
frames as fit in ``--seconds``, ``--runs`` times, and prints the median frames/s and
MB/s. Frame sizes: 1080p VP8 at 2.5 Mbit/s and 30 fps is ~10 kB per frame on average
(keyframes ~60 kB); Opus at 20 ms and 32 kbit/s is ~80 bytes. The budget line is the
issue's: one 1080p30 stream sent plus 31 received, as a share of one core.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from visavis.e2ee.frames import Codec
from visavis.e2ee.ratchet import Keyring
from visavis.protocol.sframe import CipherSuite

SIZES = {"1080p keyframe 60 kB": 60_000, "1080p frame 10 kB": 10_000, "audio 80 B": 80}


def _frames_for(size: int, seconds: float) -> int:
    """Roughly how many frames of ``size`` one run should take (at ~1 GB/s, >= 2000)."""
    return max(2000, int(seconds * 1e9 / max(size, 1) / 10))


def measure(suite: CipherSuite, size: int, seconds: float, runs: int) -> tuple[float, float]:
    """Median (encrypt, decrypt) frames per second over ``runs`` runs."""
    codec = Codec.OPUS if size < 1000 else Codec.VP8
    frame = bytes([0x01]) + os.urandom(size - 1)  # VP8 delta / Opus TOC
    count = _frames_for(size, seconds)
    enc_rates, dec_rates = [], []
    for _ in range(runs):
        sender, receiver = Keyring(suite), Keyring(suite)
        receiver.install("peer", sender.current)
        encrypt, decrypt = sender.encrypt, receiver.decrypt
        start = time.perf_counter()
        sealed = [encrypt(codec, frame) for _ in range(count)]
        middle = time.perf_counter()
        opened = [decrypt(codec, data) for data in sealed]
        end = time.perf_counter()
        if opened[-1] != frame or receiver.stats.dropped:
            raise RuntimeError("a frame did not decrypt")
        enc_rates.append(count / (middle - start))
        dec_rates.append(count / (end - middle))
    return statistics.median(enc_rates), statistics.median(dec_rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(
        f"{'suite':32} {'frame':22} {'enc fr/s':>10} {'enc MB/s':>9} {'dec fr/s':>10} "
        f"{'dec MB/s':>9}"
    )
    budget: dict[CipherSuite, float] = {}
    for suite in CipherSuite:
        for label, size in SIZES.items():
            enc, dec = measure(suite, size, args.seconds, args.runs)
            print(
                f"{suite.name:32} {label:22} {enc:10.0f} {enc * size / 1e6:9.1f} "
                f"{dec:10.0f} {dec * size / 1e6:9.1f}"
            )
            if size == 10_000:
                # 30 frames/s sent, 31 x 30 frames/s received: seconds of CPU per second.
                budget[suite] = 30 / enc + 31 * 30 / dec
    print("\nbudget (1080p30: 1 stream sent + 31 received, 10 kB frames), share of one core:")
    for suite, share in budget.items():
        print(f"  {suite.name:32} {share * 100:5.1f} %  (limit 10 %)")


if __name__ == "__main__":
    main()
