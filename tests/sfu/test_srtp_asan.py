"""The native path's SRTP (``_srtp.c``) fed random datagrams on every entry point under
AddressSanitizer and UBSan (``srtp_fuzz.c``): no read or write outside a packet, no
undefined behaviour, and protected packets still unprotect."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SFU = ROOT / "src" / "visavis" / "sfu"


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_random_datagrams_under_sanitizers(tmp_path: Path) -> None:
    binary = tmp_path / "srtp_fuzz"
    subprocess.run(
        [
            "cc", "-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
            "-I", str(SFU), "-o", str(binary),
            str(Path(__file__).with_name("srtp_fuzz.c")), str(SFU / "_srtp.c"), "-lcrypto",
        ],
        check=True,
    )  # fmt: skip
    run = subprocess.run([str(binary), "100000"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "runtime error" not in run.stderr and "Sanitizer" not in run.stderr
    assert int(run.stdout.split()[0]) > 1000  # the round trips really happened
