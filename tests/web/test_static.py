"""How signaling serves the web client: MIME types, CSP, revalidation, compression, and
that every module the client imports exists (no bundler checks it for us)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from visavis.signaling.web import CSP, WEB_DIR, web_client

IMPORT = re.compile(
    r"""(?:import|export)\s[^;]*?from\s+["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)"""
)


@pytest.fixture
def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=web_client()), base_url="http://visavis.test"
    )


async def test_index_and_app_routes_serve_the_client(client: httpx.AsyncClient) -> None:
    for path in ("/", "/calls", "/devices", "/link/abc"):
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert "<title>visavis</title>" in response.text
        assert response.headers["content-security-policy"] == CSP
    assert (await client.get("/nope.js")).status_code == 404


async def test_mime_types_and_security_headers(client: httpx.AsyncClient) -> None:
    expected = {
        "/js/main.js": "text/javascript; charset=utf-8",
        "/app.css": "text/css; charset=utf-8",
        "/manifest.webmanifest": "application/manifest+json",
        "/icon.svg": "image/svg+xml",
        "/vendor/preact/dist/preact.module.js": "text/javascript; charset=utf-8",
    }
    for path, mime in expected.items():
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"] == mime, path
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-cache"
    assert "script-src 'self' 'wasm-unsafe-eval'" in CSP
    assert "'unsafe-inline'" not in CSP


async def test_revalidation_and_compression(client: httpx.AsyncClient) -> None:
    first = await client.get("/js/app.js", headers={"accept-encoding": "gzip"})
    assert first.headers["content-encoding"] == "gzip"
    etag = first.headers["etag"]
    again = await client.get("/js/app.js", headers={"if-none-match": etag})
    assert again.status_code == 304


def test_no_inline_script_or_style_in_index() -> None:
    index = (WEB_DIR / "index.html").read_text()
    for tag in re.findall(r"<script[^>]*>", index):
        assert "src=" in tag, f"inline script {tag}"
    assert "<style" not in index and "style=" not in index
    assert "http://" not in index and "https://" not in index  # nothing from elsewhere


def test_every_import_resolves_to_a_served_file() -> None:
    sources = [p for p in (WEB_DIR / "js").rglob("*.js")]
    assert sources
    for source in sources:
        for match in IMPORT.finditer(source.read_text()):
            target = match.group(1) or match.group(2)
            assert target.startswith((".", "/")), f"{source}: bare import {target!r}"
            resolved = (
                WEB_DIR / target.lstrip("/")
                if target.startswith("/")
                else (source.parent / target).resolve()
            )
            assert Path(resolved).is_file(), f"{source}: {target} does not exist"


async def test_index_preloads_the_whole_static_module_graph(client: httpx.AsyncClient) -> None:
    """The browser learns every module of the first paint from index.html, so it fetches
    them at once rather than one import level per round trip."""
    response = await client.get("/")
    preloaded = set(re.findall(r'<link rel="modulepreload" href="([^"]+)">', response.text))
    reached: set[str] = set()
    todo = ["/js/main.js"]
    while todo:  # the static imports, followed independently of the server's code
        current = todo.pop()
        for match in IMPORT.finditer((WEB_DIR / current.lstrip("/")).read_text()):
            if match.group(2):
                continue  # import(): loaded later, on purpose not preloaded
            target = (WEB_DIR / current.lstrip("/")).parent / match.group(1)
            url = "/" + str(target.resolve().relative_to(WEB_DIR))
            if url not in reached:
                reached.add(url)
                todo.append(url)
    assert reached and reached <= preloaded, reached - preloaded
    assert preloaded <= reached | {"/js/app.js"}, preloaded - reached
    assert response.text.index("modulepreload") < response.text.index('<script type="module"')
    etag = response.headers["etag"]
    again = await client.get("/calls", headers={"if-none-match": etag})
    assert again.status_code == 304
    assert again.headers["content-security-policy"] == CSP
