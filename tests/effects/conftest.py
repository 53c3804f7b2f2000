"""Fixtures for the effects' browser tests: the web client's origin and Chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.effects import harness

HAVE_CHROMIUM = Path(harness.CHROMIUM).exists()
WEB_DIR = Path(__file__).resolve().parents[2] / "src" / "visavis" / "web"
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "connect-src 'self' ws: wss:",
        "worker-src 'self' blob:",
        "object-src 'none'",
    ]
)


@pytest.fixture(scope="session")
def csp() -> str:
    """The Content-Security-Policy the harness pages are served with (the client's)."""
    return CSP


@pytest.fixture(scope="session")
def web_origin() -> Iterator[str]:
    """Where src/visavis/web is served, with the client's Content-Security-Policy."""
    if not (WEB_DIR / "vendor" / "@mediapipe" / "selfie_segmentation").is_dir():
        pytest.skip("src/visavis/web/vendor is missing: run scripts/setup")
    with harness.static_origin(WEB_DIR, CSP) as origin:
        yield origin


@pytest.fixture
async def playwright() -> AsyncIterator[Any]:
    api = pytest.importorskip("playwright.async_api")
    if not HAVE_CHROMIUM:
        pytest.skip("Debian chromium is not installed (scripts/setup)")
    async with api.async_playwright() as p:
        yield p
