"""Serving the browser client (``src/visavis/web``) at ``/`` of signaling.

Every asset comes from visavis itself (no CDN), under a strict Content-Security-Policy: no
inline script or style, scripts only from this origin (plus ``wasm-unsafe-eval`` for the
effects' WebAssembly), connections to this origin and to WebSocket URLs (the SFU's
control socket listens on its own port). Files are not content-hashed (no bundler), so
every response says ``no-cache``: the browser keeps its copy and revalidates it with the
ETag, a 304 on a second visit. Text assets are gzip-compressed on the fly.

``index.html`` goes out with a ``<link rel="modulepreload">`` for every module the entry
point reaches through static imports (read from the files when the server starts): the
browser then fetches the whole module graph at once instead of one import level per
round trip (the waterfall that dominated the cold load, docs/web.md "Benchmark"). The
list is only a hint: a module missing from it still loads through its import.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import MutableMapping
from pathlib import Path, PurePosixPath
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import PlainTextResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "font-src 'self'",
        "connect-src 'self' ws: wss:",
        "worker-src 'self' blob:",
        "manifest-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(self), microphone=(self), display-capture=(self)",
}
# MIME types Python's mimetypes table may lack or get wrong on a minimal system.
MIME_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".wasm": "application/wasm",
    ".tflite": "application/octet-stream",
    ".binarypb": "application/octet-stream",
    ".data": "application/octet-stream",
}
# The app's own routes, all answered with index.html (the client routes by path).
APP_ROUTES = ("/", "/calls", "/devices", "/settings", "/link")
ENTRY = "/js/main.js"
# `import … from "x"`, `export … from "x"` and `import "x"`; dynamic import() is left out
# on purpose (code loaded later should not compete with the first paint).
STATIC_IMPORT = re.compile(
    r"""^[ \t]*(?:import|export)\b[^;"'()]*?\bfrom\s*["']([^"']+)["']"""
    r"""|^[ \t]*import\s*["']([^"']+)["']""",
    re.MULTILINE,
)


def module_graph(directory: Path, entry: str = ENTRY) -> list[str]:
    """URL paths of the modules ``entry`` reaches through static imports, nearest first
    (breadth first), ``entry`` excluded; targets that are not files here are skipped."""
    seen = {entry}
    order: list[str] = []
    queue = [entry]
    while queue:
        current = queue.pop(0)
        try:
            source = (directory / current.lstrip("/")).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for match in STATIC_IMPORT.finditer(source):
            target = match.group(1) or match.group(2)
            if target.startswith("/"):
                url = str(PurePosixPath(target))
            elif target.startswith("."):
                url = _normalize(str(PurePosixPath(current).parent / target))
            else:
                continue  # a bare specifier: nothing of ours
            if url in seen or not (directory / url.lstrip("/")).is_file():
                continue
            seen.add(url)
            order.append(url)
            queue.append(url)
    return order


def _normalize(path: str) -> str:
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return "/" + "/".join(parts)


def index_with_preloads(directory: Path) -> bytes:
    """``index.html`` with a modulepreload link for each module of the static graph that
    it does not preload already, inserted before the entry point's script tag."""
    html = (directory / "index.html").read_text(encoding="utf-8")
    links = "".join(
        f'<link rel="modulepreload" href="{url}">\n'
        for url in module_graph(directory)
        if f'href="{url}"' not in html
    )
    marker = f'<script type="module" src="{ENTRY}">'
    if links and marker in html:
        html = html.replace(marker, links + marker, 1)
    return html.encode()


class WebClient:
    """ASGI app for the client's files: security headers, MIME types, revalidation."""

    def __init__(self, directory: Path = WEB_DIR) -> None:
        self.directory = directory
        self.files = StaticFiles(directory=directory, check_dir=False)
        self.index: bytes | None = None
        if (directory / "index.html").is_file():
            self.index = index_with_preloads(directory)
            self.index_etag = '"' + hashlib.sha256(self.index).hexdigest()[:32] + '"'

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path in APP_ROUTES or path.startswith("/link/"):
            scope = {**scope, "path": "/index.html"}
            path = "/index.html"
        suffix = Path(path).suffix.lower()

        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                headers["cache-control"] = "no-cache"
                if suffix in MIME_TYPES and message["status"] in (200, 206):
                    headers["content-type"] = MIME_TYPES[suffix]
                if path == "/sw.js":  # the service worker controls the whole origin
                    headers["service-worker-allowed"] = "/"
            await send(message)

        if path == "/index.html" and self.index is not None:
            await self._send_index(scope, receive, send_with_headers)
            return
        try:
            await self.files(scope, receive, send_with_headers)
        except HTTPException as exc:  # no such file: a plain 404/405, with our headers
            response = PlainTextResponse(exc.detail, status_code=exc.status_code)
            await response(scope, receive, send_with_headers)

    async def _send_index(self, scope: Scope, receive: Receive, send: Send) -> None:
        """index.html with its preloads (made at start), revalidated by ETag."""
        assert self.index is not None
        if scope["method"] not in ("GET", "HEAD"):
            await PlainTextResponse("Method Not Allowed", status_code=405)(scope, receive, send)
            return
        headers = {"etag": self.index_etag}
        request_headers = dict(scope.get("headers") or [])
        if request_headers.get(b"if-none-match", b"").decode("latin-1") == self.index_etag:
            await Response(status_code=304, headers=headers)(scope, receive, send)
            return
        body = b"" if scope["method"] == "HEAD" else self.index
        response = Response(body, media_type="text/html", headers=headers)
        await response(scope, receive, send)


def web_client(directory: Path = WEB_DIR) -> ASGIApp:
    """The client's static files, gzip-compressed (mount it last, at ``/``)."""
    return GZipMiddleware(WebClient(directory), minimum_size=512)
