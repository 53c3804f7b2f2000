"""The SFU's native fast path built for fuzzing: AddressSanitizer and UBSan, so that a
bad read or write in ``_fastpath.c`` stops the run instead of passing unnoticed.

``python -m fuzz.native`` builds ``fuzz/.work/asan/_fastpath*.so`` from the worktree's
``src/visavis/sfu/_fastpath.c`` and ``_srtp.c`` (gcc, as setup.py builds the shipped one, plus the
sanitizers and gcc's ``trace-cmp`` hooks) and ``covshim.so``;
``fuzz.run --asan`` builds them when stale and starts libFuzzer with :func:`environment`:
the ASan runtime preloaded (before libc: its malloc must win), after ``covshim.so`` (see
``covshim.c``: libasan's weak coverage stubs would otherwise hide atheris's libFuzzer,
which then sees no coverage at all, Python's included), ``PYTHONMALLOC=malloc`` (so
bytes objects are heap blocks with redzones, not pymalloc arenas), reports that abort
(libFuzzer records an abort as a crash), and ``FUZZ_FASTPATH`` naming the build, which
``fuzz/_libfuzzer.py`` imports as ``visavis.sfu._fastpath`` before anything else can
import the shipped one.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
SFU = HERE.parents[1] / "src" / "visavis" / "sfu"
SOURCES = [SFU / "_fastpath.c", SFU / "_srtp.c"]  # setup.py's visavis.sfu._fastpath
LIBRARIES = ["-lcrypto"]
WORK = HERE.parent / ".work" / "asan"
OUTPUT = WORK / f"_fastpath{sysconfig.get_config_var('EXT_SUFFIX')}"
SHIM = WORK / "covshim.so"
FLAGS = [
    "-shared", "-fPIC", "-O1", "-g", "-fno-omit-frame-pointer",
    "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
    "-fsanitize-coverage=trace-cmp",  # (trace-pc: libFuzzer refuses it, edges need clang)
    "-Wall", "-Wno-missing-braces",
]  # fmt: skip


def _stale(output: Path, source: Path) -> bool:
    return not output.exists() or output.stat().st_mtime < source.stat().st_mtime


def build(force: bool = False) -> Path:
    """Compile the sanitized extension and the shim unless newer than their sources."""
    WORK.mkdir(parents=True, exist_ok=True)
    if force or _stale(SHIM, HERE / "covshim.c"):
        cmd = ["gcc", "-shared", "-fPIC", "-O2", str(HERE / "covshim.c"), "-ldl", "-o", str(SHIM)]
        subprocess.run(cmd, check=True)
    if force or any(_stale(OUTPUT, source) for source in [*SOURCES, SFU / "_srtp.h"]):
        include = sysconfig.get_paths()["include"]
        cmd = ["gcc", *FLAGS, f"-I{include}", *map(str, SOURCES), *LIBRARIES, "-o", str(OUTPUT)]
        subprocess.run(cmd, check=True)
    return OUTPUT


def _libasan() -> str:
    path = subprocess.run(
        ["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return str(Path(path).resolve())


def _atheris_libfuzzer() -> str:
    spec = importlib.util.find_spec("atheris")  # not imported: this is the parent process
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("atheris is not installed (pip install -e '.[fuzz]')")
    found = sorted(Path(spec.submodule_search_locations[0]).glob("core_with_libfuzzer*.so"))
    if not found:
        raise SystemExit("atheris without its libFuzzer core: cannot fuzz the C build")
    return str(found[0])


def environment(extension: Path) -> dict[str, str]:
    """What the fuzzing child needs to run the sanitized build."""
    return {
        "LD_PRELOAD": f"{SHIM}:{_libasan()}",
        "FUZZ_LIBFUZZER": _atheris_libfuzzer(),
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
