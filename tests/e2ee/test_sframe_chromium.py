"""The browser's SFrame (src/visavis/web/e2ee/sframe.js, WebCrypto) passes the same RFC
9605 Appendix C vectors as the Python codec, in Debian's Chromium, in a page and in a
worker (where the media transforms run), and interoperates with the Python codec."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import chromium, static_site
from visavis.protocol.sframe import Context, SendKey
from visavis.signaling.web import WEB_DIR

pytestmark = pytest.mark.browser
VECTORS = Path(__file__).parent / "vectors" / "rfc9605-sframe.json"


PAGE_CHECK = """async (text) => {
  const m = await import("/e2ee/sframe.js");
  const r = await m.checkVectors(m.parseVectors(text));
  return [r.passed, r.failures];
}"""

WORKER_CHECK = """async (text) => {
  const src = `import * as m from "${location.origin}/e2ee/sframe.js";
    onmessage = async (e) => {
      const r = await m.checkVectors(m.parseVectors(e.data));
      postMessage([r.passed, r.failures]);
    };`;
  const url = URL.createObjectURL(new Blob([src], {type: "text/javascript"}));
  const worker = new Worker(url, {type: "module"});
  return await new Promise((resolve, reject) => {
    worker.onmessage = (e) => resolve(e.data);
    worker.onerror = (e) => reject(new Error(e.message));
    worker.postMessage(text);
  });
}"""

INTEROP = """async ([sealedHex, keyHex]) => {
  const m = await import("/e2ee/sframe.js");
  const hex = (s) => Uint8Array.from(s.match(/../g), (b) => parseInt(b, 16));
  const key = hex(keyHex);
  const ctx = new m.Context();
  await ctx.addKey(77n, key);
  const got = await ctx.unprotect(hex(sealedHex), Uint8Array.of(0x78));
  let replay = "";
  try { await ctx.unprotect(hex(sealedHex), Uint8Array.of(0x78)); }
  catch (e) { replay = e.reason; }
  const sender = await m.SendKey.create(78n, key);
  const out = await sender.protect(new TextEncoder().encode("from chromium"), Uint8Array.of(1));
  return [new TextDecoder().decode(got.plaintext), replay,
          Array.from(out, (b) => b.toString(16).padStart(2, "0")).join("")];
}"""


async def test_rfc_vectors_pass_in_chromium_page_and_worker() -> None:
    text = VECTORS.read_text()
    with static_site(WEB_DIR) as base:
        async with chromium() as browser:
            page = await browser.new_page()
            await page.goto(base + "/e2ee/sframe.js")
            assert await page.evaluate(PAGE_CHECK, text) == [297, []]
            assert await page.evaluate(WORKER_CHECK, text) == [297, []]

            key = bytes(range(32))
            sealed = SendKey(77, key).protect(b"from python", b"\x78")
            plain, replay, out = await page.evaluate(INTEROP, [sealed.hex(), key.hex()])
            assert (plain, replay) == ("from python", "replay")
            receiver = Context()
            receiver.add_key(78, key)
            assert receiver.unprotect(bytes.fromhex(out), b"\x01").plaintext == b"from chromium"
