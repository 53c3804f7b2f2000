"""The SFU's native fast path built for fuzzing: AddressSanitizer and UBSan, so that a
bad read or write in ``_fastpath.c`` stops the run instead of passing unnoticed.

``python -m fuzz.native`` builds ``fuzz/.work/asan/_fastpath*.so`` from the worktree's
``src/visavis/sfu/_fastpath.c`` (gcc, as setup.py builds the shipped one, plus the
sanitizers); ``fuzz.run --asan`` builds it when stale and starts libFuzzer with
:func:`environment`: the ASan runtime preloaded (it must come first in a process that is
not itself instrumented), ``PYTHONMALLOC=malloc`` (so bytes objects are heap blocks with
redzones, not pymalloc arenas), reports that abort (libFuzzer records an abort as a
crash), and ``FUZZ_FASTPATH`` naming the build, which ``fuzz/_libfuzzer.py`` imports as
``visavis.sfu._fastpath`` before anything else can import the shipped one.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SOURCE = ROOT.parent / "src" / "visavis" / "sfu" / "_fastpath.c"
OUTPUT = ROOT / ".work" / "asan" / f"_fastpath{sysconfig.get_config_var('EXT_SUFFIX')}"
FLAGS = [
    "-shared", "-fPIC", "-O1", "-g", "-fno-omit-frame-pointer",
    "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
    "-Wall", "-Wno-missing-braces",
]  # fmt: skip


def build(force: bool = False) -> Path:
    """Compile the sanitized extension unless it is newer than its source."""
    if not force and OUTPUT.exists() and OUTPUT.stat().st_mtime >= SOURCE.stat().st_mtime:
        return OUTPUT
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    include = sysconfig.get_paths()["include"]
    cmd = ["gcc", *FLAGS, f"-I{include}", str(SOURCE), "-lsrtp2", "-o", str(OUTPUT)]
    subprocess.run(cmd, check=True)
    return OUTPUT


def _libasan() -> str:
    path = subprocess.run(
        ["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return str(Path(path).resolve())


def _atheris_libfuzzer() -> str:
    import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

    found = sorted(Path(atheris.__file__).parent.glob("core_with_libfuzzer*.so"))
    if not found:
        raise SystemExit("atheris without its libFuzzer core: cannot fuzz the C build")
    return str(found[0])


def environment(extension: Path) -> dict[str, str]:
    """What the fuzzing child needs to run the sanitized build."""
    return {
        # libasan.so defines libFuzzer's coverage hooks as weak stubs: preloaded alone
        # it would take atheris's Python coverage (none at all). atheris's libFuzzer goes
        # first, then ASan (before libc, which is what its malloc needs).
        "LD_PRELOAD": f"{_atheris_libfuzzer()} {_libasan()}",
        "ASAN_OPTIONS": (
            "detect_leaks=0:abort_on_error=1:quarantine_size_mb=64:verify_asan_link_order=0"
        ),
        "UBSAN_OPTIONS": "halt_on_error=1:abort_on_error=1:print_stacktrace=1",
        "PYTHONMALLOC": "malloc",
        "FUZZ_FASTPATH": str(extension),
    }


def load(path: str) -> None:
    """Import the extension at ``path`` as ``visavis.sfu._fastpath``."""
    name = "visavis.sfu._fastpath"
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)


if __name__ == "__main__":
    print(build(force=True))
