"""Fixtures for the effects' browser tests: the real ``visavis serve`` (its web client's
origin, with the product's Content-Security-Policy) and Chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.browser import HAVE_CHROMIUM
from tests.served import SLOW_CLIENTS, Served, serve
from visavis.signaling.web import CSP, WEB_DIR

__all__ = ["CSP", "WEB_DIR"]


@pytest.fixture(scope="session")
def csp() -> str:
    """The Content-Security-Policy the harness pages are answered with: the client's."""
    return CSP


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One ``visavis serve`` for the effects tests (its web client at /)."""
    if not (WEB_DIR / "vendor" / "@mediapipe" / "selfie_segmentation").is_dir():
        pytest.skip("src/visavis/web/vendor is missing: run scripts/setup")
    with serve(tmp_path_factory.mktemp("effects"), env=SLOW_CLIENTS) as served:
        yield served


@pytest.fixture(scope="session")
def web_origin(server: Served) -> str:
    """Where the effects modules, the model and the worklets are fetched from."""
    return server.http_url


@pytest.fixture
async def playwright() -> AsyncIterator[Any]:
    api = pytest.importorskip("playwright.async_api")
    if not HAVE_CHROMIUM:
        pytest.skip("Debian chromium is not installed (scripts/setup)")
    async with api.async_playwright() as p:
        yield p
