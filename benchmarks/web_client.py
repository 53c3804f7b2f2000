"""Web client benchmark: time to interactive, bytes shipped, invite-to-first-frame.

Starts the real ``visavis serve`` (tests/served.py) and Debian's Chromium (fake camera
and microphone), then measures:

- **time to interactive**: from navigation start to the sign-in form rendered (cold,
  empty cache), and to the signed-in home screen with the device socket online (warm),
  both from the client's own performance marks (``visavis:rendered``, ``visavis:online``;
  earlier sessions read ``performance.now()`` after the driver saw the form, which adds
  the driver's latency: still printed as ``cold driver_saw``);
- **bytes shipped**: JavaScript and CSS the page loads, gzip-compressed as served
  (transfer sizes from the Resource Timing entries of a cold load), media models excluded;
- **invite-to-first-frame**: over N 1:1 calls between two browser contexts on loopback,
  from the caller's ``call.invite`` to the first inbound video frame decoded on the
  caller's side (the callee answers as soon as its ring view appears, from inside its
  page, so no test-driver latency is counted).

Budgets (issue 8): interactive < 1 s, < 250 KB compressed, first frame p50 < 500 ms.
Time to interactive is the median of ``--loads`` loads each (a fresh browser context per
cold load). Where a call's setup time goes: the client's performance marks
(``visavis:*``: invite, answer, offer/answer in, verified, out, peer keys agreed, ICE
connected) and the benchmark's own getStats probes (at the caller: DTLS up, the first
RTP packet, the first video packet, frame received, frame decoded; with
``--callee-probe`` also the callee's camera on its sender and its first frame encoded
and sent), read from both pages after each call and put on one time line (ms after
the caller's invite, medians over the calls). The load average is printed before and
after (a figure is only worth as much as the machine was quiet).

    .venv/bin/python benchmarks/web_client.py --calls 20 --loads 5

Everything stays on 127.0.0.1; every loop is bounded by --calls and timeouts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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

# In the callee's page: answer every ring with video as soon as it is shown; with the
# probe (``--callee-probe``) also watch its own sending side (getStats every 5 ms) and
# mark when the camera track is on the video sender and when the first video frame was
# encoded and sent. The probe costs CPU on the path it measures: off for budget runs.
AUTO_ANSWER = """(probe) => window.visavis.store.subscribe((s) => {
  if (s.call.phase === "ringing" && s.call.direction === "in" && !window.__answering) {
    window.__answering = true;
    const app = window.visavis;
    app.answer("video").finally(() => { window.__answering = false; });
    if (!probe) return;
    const t0 = performance.now(), seen = new Set();
    const mark = (key) => {
      if (!seen.has(key)) { seen.add(key); performance.mark(`visavis:bench-${key}`); }
    };
    (async () => {
      while (performance.now() < t0 + 20000 && !seen.has("first-sent")) {
        const pc = app.controller?.pc;
        if (pc) {
          if (pc.getSenders().some((x) => x.track?.kind === "video")) mark("camera-on-sender");
          for (const r of (await pc.getStats()).values()) {
            if (r.type !== "outbound-rtp" || r.kind !== "video") continue;
            if (r.framesEncoded > 0) mark("first-encoded");
            if (r.framesSent > 0) mark("first-sent");
          }
        }
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
  }
})"""

# In the caller's page: invite, then poll getStats every 5 ms until a frame is decoded;
# on the way (ms after the invite; each late by up to one getStats round): the callee
# answered, its SDP answer applied, DTLS up, the first RTP packet (any kind), the first
# video packet, the first whole video frame received, the first one decoded.
TIMED_CALL = """async (handle) => {
  // the path ICE chose: "host udp → prflx udp" (an mDNS-hidden address shows as .local)
  const selectedPair = async (pc) => {
    const stats = [...(await pc.getStats()).values()];
    const byId = new Map(stats.map((r) => [r.id, r]));
    const transport = stats.find((r) => r.type === "transport" && r.selectedCandidatePairId);
    const pair = byId.get(transport?.selectedCandidatePairId);
    const side = (id) => {
      const c = byId.get(id);
      const mdns = c?.address?.endsWith(".local") ? " .local" : "";
      return c ? `${c.candidateType} ${c.protocol}${mdns}` : "?";
    };
    return pair ? `${side(pair.localCandidateId)} -> ${side(pair.remoteCandidateId)}` : "none";
  };
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
      for (const r of pc ? (await pc.getStats()).values() : []) {
        if (r.type === "transport" && r.dtlsState === "connected") mark("dtls_connected");
        if (r.type !== "inbound-rtp") continue;
        if (r.packetsReceived > 0) mark("first_rtp");
        if (r.kind !== "video") continue;
        if (r.packetsReceived > 0) mark("first_video_rtp");
        if (r.framesReceived > 0) mark("first_video_frame_in");
        if (r.framesDecoded > 0) {
          marks.first_frame = performance.now() - t0;
          return { marks, pair: await selectedPair(pc) };
        }
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    return null;
  } finally {
    unsubscribe();
  }
}"""


# The client's performance marks since the last clear, as epoch-aligned ms.
READ_MARKS = """() => performance.getEntriesByType("mark")
  .filter((m) => m.name.startsWith("visavis:"))
  .map((m) => ({name: m.name.slice(8), at: performance.timeOrigin + m.startTime}))"""


def timeline(caller: list[dict[str, Any]], callee: list[dict[str, Any]]) -> dict[str, float]:
    """First occurrence of each mark, ms after the caller's invite mark."""
    invite = next((m["at"] for m in caller if m["name"] == "invite"), None)
    if invite is None:
        return {}
    out: dict[str, float] = {}
    for side, marks in (("caller", caller), ("callee", callee)):
        for mark in sorted(marks, key=lambda m: m["at"]):
            out.setdefault(f"{side}:{mark['name']}", mark["at"] - invite)
    return out


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


# ms since navigation start of a client mark (null: not set yet).
MARK_AT = """(name) => performance.getEntriesByName(`visavis:${name}`)[0]?.startTime ?? null"""


async def cold_load(browser: Any, url: str) -> tuple[dict[str, float], list[dict[str, Any]], Any]:
    """A fresh context (empty cache) opening ``/`` until the sign-in form is there: when
    the page had it rendered (the client's mark, right after the first render; its
    handlers are attached then) and when the driver saw it (adds Playwright's polling
    and a round trip: what earlier sessions reported)."""
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(url + "/")
    await page.get_by_label("Handle (email or phone)").wait_for()
    seen = float(await page.evaluate("performance.now()"))
    nav = await page.evaluate(
        "(() => { const n = performance.getEntriesByType('navigation')[0];"
        " return {html: n.responseEnd, dcl: n.domContentLoadedEventStart}; })()"
    )
    timing = {
        "rendered": float(await page.evaluate(MARK_AT, "rendered")),
        "modules_run": float(await page.evaluate(MARK_AT, "modules-run")),
        "html_end": float(nav["html"]),
        "driver_saw": seen,
    }
    entries = await page.evaluate(
        "performance.getEntriesByType('resource').map((e) =>"
        " ({name: e.name, size: e.transferSize, body: e.decodedBodySize,"
        " start: e.startTime, end: e.responseEnd}))"
    )
    return timing, entries, context


async def run(calls: int, loads: int = 5, callee_probe: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"load_average_before": os.getloadavg(), "callee_probe": callee_probe}
    with serve(Path(tempfile.mkdtemp(prefix="visavis-web-bench-"))) as server:
        url = server.http_url
        signup(url, "caller@example.com")
        signup(url, "callee@example.com")
        async with async_playwright() as playwright:
            browser = await launch_chromium(playwright)
            try:
                # Cold loads: empty cache, sign-in form ready (the last one is kept).
                colds: list[dict[str, float]] = []
                for i in range(loads):
                    timing, entries, context = await cold_load(browser, url)
                    colds.append(timing)
                    if i < loads - 1:
                        await context.close()
                page = context.pages[0]
                rendered = [c["rendered"] for c in colds]
                out["interactive_cold_ms_p50"] = round(statistics.median(rendered), 1)
                out["interactive_cold_ms_all"] = [round(v) for v in rendered]
                for key in ("html_end", "modules_run", "driver_saw"):
                    out[f"cold {key} ms p50"] = round(statistics.median(c[key] for c in colds), 1)
                scripts = [e for e in entries if e["name"].endswith(".js")]
                if scripts:  # the module graph's fetches: how long the waterfall lasts
                    out["modules_last_response_ms"] = round(max(e["end"] for e in scripts))
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
                # Warm loads: cached files revalidated, signed in, socket online.
                warms: list[float] = []
                for _ in range(loads):
                    await page.goto(url + "/")
                    await page.wait_for_function(
                        "() => window.visavis.store.get().status === 'online'", polling=5
                    )
                    warms.append(float(await page.evaluate(MARK_AT, "online")))
                out["interactive_warm_online_ms_p50"] = round(statistics.median(warms), 1)
                out["interactive_warm_online_ms_all"] = [round(v) for v in warms]

                callee_context = await browser.new_context()
                callee = await callee_context.new_page()
                await callee.goto(url + "/")
                await sign_in(callee, "callee@example.com", "bench callee")
                await callee.evaluate(AUTO_ANSWER, callee_probe)

                times: list[float] = []
                steps: dict[str, list[float]] = {}
                pairs: dict[str, int] = {}  # the candidate pair each call used
                for _ in range(calls):
                    await page.evaluate("performance.clearMarks()")
                    await callee.evaluate("performance.clearMarks()")
                    timed = await page.evaluate(TIMED_CALL, "callee@example.com")
                    if timed is not None:
                        marks = timed["marks"]
                        pairs[timed["pair"]] = pairs.get(timed["pair"], 0) + 1
                        times.append(float(marks["first_frame"]))
                        for key, value in marks.items():
                            steps.setdefault(key, []).append(float(value))
                        line = timeline(
                            await page.evaluate(READ_MARKS), await callee.evaluate(READ_MARKS)
                        )
                        for key, value in line.items():
                            steps.setdefault(key, []).append(value)
                    await page.evaluate("window.visavis.hangUp()")
                    await page.wait_for_function(
                        "() => window.visavis.store.get().call.phase === 'idle'", timeout=15_000
                    )
                    await callee.wait_for_function(
                        "() => window.visavis.store.get().call.phase === 'idle'", timeout=15_000
                    )
                out["calls"] = calls
                out["candidate_pairs"] = pairs
                out["first_frame_ok"] = len(times)
                if times:
                    out["first_frame_p50_ms"] = round(statistics.median(times), 1)
                    out["first_frame_p99_ms"] = round(percentile(times, 0.99), 1)
                    out["first_frame_min_ms"] = round(min(times), 1)
                line = {k: statistics.median(v) for k, v in steps.items() if k != "first_frame"}
                for key, value in sorted(line.items(), key=lambda kv: kv[1]):
                    out[f"p50 {key} ms"] = round(value, 1)
            finally:
                await browser.close()
    out["load_average_after"] = os.getloadavg()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--loads", type=int, default=5, help="cold and warm loads each")
    parser.add_argument(
        "--callee-probe",
        action="store_true",
        help="also poll the callee's getStats (its encoder's first frame; costs CPU)",
    )
    args = parser.parse_args()
    result = asyncio.run(run(args.calls, args.loads, args.callee_probe))
    for key, value in result.items():
        print(f"{key:40} {round(value, 1) if isinstance(value, float) else value}")


if __name__ == "__main__":
    main()
