"""Every committed fuzz corpus input, replayed through its harness's contract (no atheris).

The corpus (``fuzz/corpus/<target>/``) holds the seeds, a minimised set of inputs that
reached new coverage in fuzz runs, and one ``regress-*`` input per crash that was fixed.
Each must be accepted or rejected with the parser's typed error only, within the time
limit; see docs/fuzzing.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzz.contract import check
from fuzz.targets import MODULES, load

CASES = [
    pytest.param(name, path, id=f"{name}/{path.name}")
    for name in sorted(MODULES)
    for path in sorted(load(name).corpus.iterdir())
]


def test_every_target_has_a_corpus() -> None:
    for name in MODULES:
        files = list(load(name).corpus.iterdir())
        assert any(p.name.startswith("seed-") for p in files), name
        assert len(files) <= 250, f"{name}: corpus not minimised ({len(files)} files)"


@pytest.mark.parametrize(("name", "path"), CASES)
def test_corpus_input_keeps_the_contract(name: str, path: Path) -> None:
    check(load(name), path.read_bytes())  # raises Hang past TIME_LIMIT seconds of CPU


def test_seeds_are_accepted() -> None:
    """The seeds are valid messages: a harness that rejects them tests nothing."""
    for name in MODULES:
        target = load(name)
        for path in target.corpus.glob("seed-*"):
            assert check(target, path.read_bytes()), f"{name}/{path.name} rejected"
