#!/usr/bin/env python3
"""The process libFuzzer runs in: ``FUZZ_TARGET=name _libfuzzer.py [libFuzzer flags...]``.

Started by :mod:`fuzz.run`. It is also a script (libFuzzer re-executes its own command
line for ``-merge=1``, hence the target in the environment), so it puts the repository
root on ``sys.path`` itself. The target's
modules, and the visavis modules they import, are imported under atheris's
instrumentation so that libFuzzer sees their branch coverage.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]


def main() -> None:
    name = os.environ["FUZZ_TARGET"]
    with atheris.instrument_imports(include=["visavis", "fuzz.targets"]):
        if os.environ.get("FUZZ_FASTPATH"):  # fuzz.run --asan: the sanitized build
            from fuzz.native import load as load_extension

            load_extension(os.environ["FUZZ_FASTPATH"])
        from fuzz.targets import load

        target = load(name)
    from fuzz.contract import check

    def one_input(data: bytes) -> None:
        check(target, data)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
