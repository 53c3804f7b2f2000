"""Serving the browser client (``src/visavis/web``) at ``/`` of signaling.

Every asset comes from visavis itself (no CDN), under a strict Content-Security-Policy: no
inline script or style, scripts only from this origin (plus ``wasm-unsafe-eval`` for the
effects' WebAssembly), connections to this origin and to WebSocket URLs (the SFU's
control socket listens on its own port). Files are not content-hashed (no bundler), so
every response says ``no-cache``: the browser keeps its copy and revalidates it with the
ETag, a 304 on a second visit. Text assets are gzip-compressed on the fly.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import PlainTextResponse
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


class WebClient:
    """ASGI app for the client's files: security headers, MIME types, revalidation."""

    def __init__(self, directory: Path = WEB_DIR) -> None:
        self.directory = directory
        self.files = StaticFiles(directory=directory, check_dir=False)

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

        try:
            await self.files(scope, receive, send_with_headers)
        except HTTPException as exc:  # no such file: a plain 404/405, with our headers
            response = PlainTextResponse(exc.detail, status_code=exc.status_code)
            await response(scope, receive, send_with_headers)


def web_client(directory: Path = WEB_DIR) -> ASGIApp:
    """The client's static files, gzip-compressed (mount it last, at ``/``)."""
    return GZipMiddleware(WebClient(directory), minimum_size=512)
