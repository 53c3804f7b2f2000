"""The NAT lab as fixtures: one lab and one server per test module, torn down even on failure.

Needs root (network namespaces, iptables). Outside CI, non-root runs skip; in CI
(``CI=true``) a missing capability is a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from .lab import Lab
from .runner import NatLab, build


def require_lab() -> None:
    missing = [tool for tool in ("ip", "iptables", "tc") if shutil.which(tool) is None]
    problem = None
    if os.geteuid() != 0:
        problem = "the NAT lab needs root (network namespaces)"
    elif missing:
        problem = f"the NAT lab needs {', '.join(missing)} (scripts/setup installs them)"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)


@pytest.fixture(scope="module")
def natlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatLab]:
    require_lab()
    logs = tmp_path_factory.mktemp("netlab")
    with Lab() as lab:
        yield build(lab, logs)
