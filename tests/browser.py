"""Debian's Chromium driven by Playwright, as every browser test here launches it.

Playwright cannot download its own browsers on this network; it drives /usr/bin/chromium
(installed by scripts/setup) through ``executable_path``. The flags keep Chromium off the
network (no background services) and give it a fake camera and microphone; pass
``--use-file-for-fake-video-capture=FILE.y4m`` / ``--use-file-for-fake-audio-capture=FILE.wav``
in ``extra_args`` for specific media. ``static_site`` serves test pages and the web client's
files to it over HTTP on loopback (ES modules and getUserMedia need an http origin).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
HAVE_CHROMIUM = Path(CHROMIUM).exists()
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


async def launch_chromium(
    playwright: Any, extra_args: Sequence[str] = (), headless: bool = True
) -> Any:
    """A headless Debian Chromium (``playwright.chromium.launch`` with our flags)."""
    return await playwright.chromium.launch(
        executable_path=CHROMIUM, headless=headless, args=[*CHROMIUM_ARGS, *extra_args]
    )


@contextlib.asynccontextmanager
async def chromium(*extra_args: str) -> AsyncIterator[Any]:
    """Playwright and a headless Debian Chromium (``launch_chromium``), closed on exit."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright, extra_args)
        try:
            yield browser
        finally:
            await browser.close()


@contextlib.contextmanager
def static_site(
    root: Path, mounts: Mapping[str, Path] | None = None, headers: Mapping[str, str] | None = None
) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1 and yield its origin (``http://127.0.0.1:PORT``).

    ``mounts`` maps a URL prefix such as ``"/web/"`` to another directory (a test page
    beside its test imports the web client's modules); ``headers`` are added to every
    answer (the product's Content-Security-Policy). Modules get JavaScript and wasm types
    whatever the host's mime.types says.
    """
    mounted = {prefix: folder.resolve() for prefix, folder in (mounts or {}).items()}
    extra = dict(headers or {})

    class Handler(http.server.SimpleHTTPRequestHandler):
        extensions_map = {
            **http.server.SimpleHTTPRequestHandler.extensions_map,
            ".js": "text/javascript",
            ".mjs": "text/javascript",
            ".wasm": "application/wasm",
        }

        def translate_path(self, path: str) -> str:
            for prefix, folder in mounted.items():
                if path.startswith(prefix):
                    clean = path.split("?", 1)[0].split("#", 1)[0][len(prefix) :]
                    target = (folder / clean).resolve()
                    return str(target if target.is_relative_to(folder) else folder / "missing")
            return super().translate_path(path)

        def end_headers(self) -> None:
            for name, value in extra.items():
                self.send_header(name, value)
            super().end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    handler = functools.partial(Handler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
