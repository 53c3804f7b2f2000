"""Web client benchmark: time to interactive, bytes shipped, invite-to-first-frame.

Starts the real ``visavis serve`` (tests/served.py) and Debian's Chromium (fake camera
and microphone), then measures:

- **time to interactive**: from navigation start to the sign-in form ready (cold, empty
  cache), and to the signed-in home screen with the device socket online (warm);
- **bytes shipped**: JavaScript and CSS the page loads, gzip-compressed as served
  (transfer sizes from the Resource Timing entries of a cold load), media models excluded;
- **invite-to-first-frame**: over N 1:1 calls between two browser contexts on loopback,
  from the caller's ``call.invite`` to the first inbound video frame decoded on the
  caller's side (the callee answers as soon as its ring view appears, from inside its
  page, so no test-driver latency is counted).

Budgets (issue 8): interactive < 1 s, < 250 KB compressed, first frame p50 < 500 ms.

    .venv/bin/python benchmarks/web_client.py --calls 20

Everything stays on 127.0.0.1; every loop is bounded by --calls and timeouts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.async_api import async_playwright
from tests.browser import launch_chromium
from tests.served import serve

PASSWORD = "correct horse battery"

# In the callee's page: answer every ring with video as soon as it is shown.
AUTO_ANSWER = """() => window.visavis.store.subscribe((s) => {
  if (s.call.phase === "ringing" && s.call.direction === "in" && !window.__answering) {
    window.__answering = true;
    window.visavis.answer("video").finally(() => { window.__answering = false; });
  }
})"""

# In the caller's page: invite, then poll getStats every 5 ms until a frame is decoded;
# on the way, when the callee answered, when its SDP answer was applied, when the first
# RTP packet came (ms after the invite; each late by up to one getStats round).
TIMED_CALL = """async (handle) => {
  const app = window.visavis;
  const t0 = performance.now();
  const marks = {};
  const mark = (key) => { if (marks[key] == null) marks[key] = performance.now() - t0; };
  const unsubscribe = app.store.subscribe((s) => {
    if (s.call.phase === "connecting") mark("answered");
  });
  app.call([handle], "video");
  const deadline = t0 + 20000;
  try {
    while (performance.now() < deadline) {
      const pc = app.controller?.pc;
      if (pc?.remoteDescription) mark("sdp_answer");
      const s = await app.stats();
      if (s && s.packetsIn > 0) mark("first_rtp");
      if (s && s.framesDecoded > 0) {
        marks.first_frame = performance.now() - t0;
        return marks;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    return null;
  } finally {
    unsubscribe();
  }
}"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def signup(http_url: str, handle: str) -> None:
    body = json.dumps({"handle": handle, "password": PASSWORD}).encode()
    request = urllib.request.Request(
        f"{http_url}/api/signup", body, {"content-type": "application/json"}
    )
    urllib.request.urlopen(request, timeout=10).close()


async def sign_in(page: Any, handle: str, name: str) -> None:
    await page.get_by_label("Handle (email or phone)").fill(handle)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_label("Name this device").fill(name)
    await page.get_by_role("button", name="Sign in", exact=True).last.click()
    await page.wait_for_function("() => window.visavis.store.get().status === 'online'")


async def run(calls: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with serve(Path(tempfile.mkdtemp(prefix="visavis-web-bench-"))) as server:
        url = server.http_url
        signup(url, "caller@example.com")
        signup(url, "callee@example.com")
        async with async_playwright() as playwright:
            browser = await launch_chromium(playwright)
            try:
                # Cold load: empty cache, sign-in form ready.
                context = await browser.new_context()
                page = await context.new_page()
                await page.goto(url + "/")
                await page.get_by_label("Handle (email or phone)").wait_for()
                out["interactive_cold_ms"] = await page.evaluate("performance.now()")
                entries = await page.evaluate(
                    "performance.getEntriesByType('resource').map((e) =>"
                    " ({name: e.name, size: e.transferSize, body: e.decodedBodySize}))"
                )
                nav = await page.evaluate(
                    "(() => { const n = performance.getEntriesByType('navigation')[0];"
                    " return {size: n.transferSize, body: n.decodedBodySize}; })()"
                )
                code = [e for e in entries if e["name"].endswith((".js", ".css"))]
                out["js_css_files"] = len(code)
                out["js_css_bytes_transferred"] = sum(e["size"] for e in code)
                out["js_css_bytes_uncompressed"] = sum(e["body"] for e in code)
                out["html_bytes_transferred"] = nav["size"]
                await sign_in(page, "caller@example.com", "bench caller")
                # Warm load: cached files revalidated, signed in, socket online.
                await page.goto(url + "/")
                await page.wait_for_function("() => window.visavis.store.get().status === 'online'")
                out["interactive_warm_online_ms"] = await page.evaluate("performance.now()")

                callee_context = await browser.new_context()
                callee = await callee_context.new_page()
                await callee.goto(url + "/")
                await sign_in(callee, "callee@example.com", "bench callee")
                await callee.evaluate(AUTO_ANSWER)

                times: list[float] = []
                steps: dict[str, list[float]] = {}
                for _ in range(calls):
                    marks = await page.evaluate(TIMED_CALL, "callee@example.com")
                    if marks is not None:
                        times.append(float(marks["first_frame"]))
                        for key, value in marks.items():
                            steps.setdefault(key, []).append(float(value))
                    await page.evaluate("window.visavis.hangUp()")
                    await page.wait_for_function(
                        "() => window.visavis.store.get().call.phase === 'idle'", timeout=15_000
                    )
                    await callee.wait_for_function(
                        "() => window.visavis.store.get().call.phase === 'idle'", timeout=15_000
                    )
                out["calls"] = calls
                out["first_frame_ok"] = len(times)
                if times:
                    out["first_frame_p50_ms"] = round(statistics.median(times), 1)
                    out["first_frame_p99_ms"] = round(percentile(times, 0.99), 1)
                    out["first_frame_min_ms"] = round(min(times), 1)
                for key in ("answered", "sdp_answer", "first_rtp"):
                    if steps.get(key):
                        out[f"p50_{key}_ms"] = round(statistics.median(steps[key]), 1)
            finally:
                await browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    result = asyncio.run(run(args.calls))
    for key, value in result.items():
        print(f"{key:32} {round(value, 1) if isinstance(value, float) else value}")


if __name__ == "__main__":
    main()
