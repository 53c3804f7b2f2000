"""Run one fuzz target (or all, one after another) and print its figures.

    python -m fuzz.run --target stun --runs 1000000
    python -m fuzz.run --all --runs 1000000 --nice 10
    python -m fuzz.run --target stun --minimise   # merge the work corpus into fuzz/corpus/
    python -m fuzz.run --target sfu_native --asan # the C fast path under ASan + UBSan

libFuzzer (through atheris) runs in a child process; its new inputs go to
``fuzz/.work/<target>/`` (not committed) and crash or hang inputs to
``fuzz/.work/artifacts/``. The summary line gives executions, exec/s, coverage (edges)
and features, corpus size, and crashes and hangs (libFuzzer stops at the first one).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fuzz.targets import MODULES

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work"
CHILD = ROOT / "_libfuzzer.py"
WALL_TIMEOUT = 60  # libFuzzer's backstop; the contract's CPU-time limit catches hangs


@dataclass
class Figures:
    target: str
    runs: int = 0
    exec_per_sec: int = 0
    cov: int = 0
    ft: int = 0
    corpus: int = 0
    crashes: int = 0
    hangs: int = 0
    seconds: float = 0.0
    artifact: str = ""

    def line(self) -> str:
        return (
            f"{self.target}: {self.runs} execs in {self.seconds:.0f} s "
            f"({self.exec_per_sec} exec/s), cov {self.cov}, ft {self.ft}, "
            f"corpus {self.corpus}, crashes {self.crashes}, hangs {self.hangs}"
            + (f" [{self.artifact}]" if self.artifact else "")
        )


_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/")
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)")
_CRASH_MARKS = (
    "Uncaught Python exception",
    "ERROR: libFuzzer: deadly signal",
    "ERROR: AddressSanitizer",
    "runtime error:",  # UBSan
)


def parse_output(target: str, text: str, seconds: float) -> Figures:
    """Read libFuzzer's status lines and final stats."""
    fig = Figures(target, seconds=seconds)
    for line in text.splitlines():
        if match := _STATUS.match(line):
            fig.runs, fig.cov, fig.ft, fig.corpus = (int(g) for g in match.groups())
        elif match := _STAT.match(line):
            key, value = match.group(1), int(match.group(2))
            if key == "number_of_executed_units":
                fig.runs = value
            elif key == "average_exec_per_sec":
                fig.exec_per_sec = value
        elif line.startswith("Hang: ") or "ALARM: working on the last Unit" in line:
            fig.hangs = 1
        elif any(mark in line for mark in _CRASH_MARKS):
            fig.crashes = 1
        elif line.startswith(("Test unit written to", "artifact_prefix")):
            fig.artifact = line.rsplit(" ", 1)[-1]
    if fig.hangs:
        fig.crashes = 0
    if not fig.exec_per_sec and seconds > 0:  # libFuzzer rounds a sub-second run down to 0
        fig.exec_per_sec = round(fig.runs / seconds)
    return fig


def _escape(token: bytes) -> str:
    return "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\x{b:02x}" for b in token)


def _child(
    name: str, flags: list[str], nice: int, env: dict[str, str] | None = None
) -> tuple[int, str, float]:
    cmd = [sys.executable, str(CHILD), *flags]
    start = time.monotonic()
    proc = subprocess.run(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        check=False,
        env={**os.environ, **(env or {}), "FUZZ_TARGET": name},
        preexec_fn=(lambda: os.nice(nice)) if nice else None,
    )
    return proc.returncode, proc.stdout, time.monotonic() - start


def fuzz(
    name: str,
    runs: int,
    nice: int,
    seed: int | None,
    log: Path,
    max_time: int | None = None,
    env: dict[str, str] | None = None,
) -> Figures:
    from fuzz.targets import load

    target = load(name)
    work = WORK / name
    work.mkdir(parents=True, exist_ok=True)
    (WORK / "artifacts").mkdir(parents=True, exist_ok=True)
    flags = [
        str(work),
        str(target.corpus),
        f"-runs={runs}",
        f"-max_len={target.max_len}",
        f"-timeout={WALL_TIMEOUT}",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-artifact_prefix={WORK / 'artifacts'}/{name}-",
    ]
    if seed is not None:
        flags.append(f"-seed={seed}")
    if max_time is not None:
        flags.append(f"-max_total_time={max_time}")
    if target.dictionary:
        path = WORK / f"{name}.dict"
        path.write_text("".join(f'"{_escape(token)}"\n' for token in target.dictionary))
        flags.append(f"-dict={path}")
    _, output, seconds = _child(name, flags, nice, env)
    log.write_text(output)
    return parse_output(name, output, seconds)


def minimise(name: str, nice: int, max_files: int) -> int:
    """Merge the committed and work corpora into a minimal set; replace the committed one."""
    from fuzz.targets import load

    target = load(name)
    merged = WORK / f"{name}.merged"
    shutil.rmtree(merged, ignore_errors=True)
    merged.mkdir(parents=True)
    sources = [str(target.corpus)]
    if (WORK / name).is_dir():
        sources.append(str(WORK / name))
    code, output, _ = _child(
        name, ["-merge=1", f"-max_len={target.max_len}", str(merged), *sources], nice
    )
    files = sorted(merged.iterdir(), key=lambda p: p.stat().st_size)
    if code != 0 or not files:
        print(output[-2000:], file=sys.stderr)
        raise SystemExit(f"{name}: merge failed ({code})")
    keep = files[:max_files]
    seeds = [p for p in target.corpus.iterdir() if p.name.startswith(("seed-", "regress-"))]
    for path in target.corpus.iterdir():
        if path not in seeds:
            path.unlink()
    for path in keep:
        if not any(p.read_bytes() == path.read_bytes() for p in seeds):
            shutil.copy(path, target.corpus / path.name)
    shutil.rmtree(merged)
    return len(list(target.corpus.iterdir()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--target", choices=sorted(MODULES), action="append", help="repeatable")
    which.add_argument("--all", action="store_true", help="every target, one after another")
    parser.add_argument("--runs", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument("--nice", type=int, default=10, help="niceness of the fuzzing child")
    parser.add_argument("--seed", type=int, default=None, help="libFuzzer's random seed")
    parser.add_argument("--max-time", type=int, default=None, help="seconds per target at most")
    parser.add_argument("--minimise", action="store_true", help="merge into fuzz/corpus/")
    parser.add_argument(
        "--asan", action="store_true", help="the SFU's C fast path built with ASan + UBSan"
    )
    parser.add_argument("--max-files", type=int, default=150, help="corpus cap per target")
    args = parser.parse_args()
    names = list(MODULES) if args.all else args.target
    failed = False
    env = None
    if args.asan:
        from fuzz import native

        env = native.environment(native.build())
    for name in names:
        if args.minimise:
            print(f"{name}: corpus now {minimise(name, args.nice, args.max_files)} files")
            continue
        log = WORK / f"{name}.log"
        WORK.mkdir(exist_ok=True)
        fig = fuzz(name, args.runs, args.nice, args.seed, log, args.max_time, env)
        print(fig.line() + f"  (log: {log.relative_to(ROOT.parent)})", flush=True)
        failed |= bool(fig.crashes or fig.hangs) or fig.runs < args.runs
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
