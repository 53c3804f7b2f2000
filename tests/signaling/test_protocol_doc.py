"""The protocol reference in docs/ is generated from the models and must match them."""

from __future__ import annotations

from pathlib import Path

from visavis.signaling import messages as m
from visavis.signaling.protocol_doc import CLIENT, SERVER, render

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_generated_reference_is_in_sync() -> None:
    for name, text in render().items():
        committed = (DOCS / name).read_text()
        assert committed == text, (
            f"docs/{name} is stale: run 'python -m visavis.signaling.protocol_doc docs'"
        )


def test_every_message_type_is_documented() -> None:
    text = (DOCS / "protocol.md").read_text()
    assert len(m.CLIENT_TYPES) == len(CLIENT) == 18
    for model in [*CLIENT, *SERVER]:
        assert f"({model.__name__})" in text
