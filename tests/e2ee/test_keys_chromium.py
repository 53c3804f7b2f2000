"""The browser's key schedule (web/e2ee/keys.js, identity.js on WebCrypto) speaks the
Python one's bytes: in Debian's Chromium a JS device and a Python device (keys.py
CallKeys) agree keys through each other's real messages, both directions; both compute
the same verification code and the same ratchet; a tampered signature, another call's
message and a forged key message are refused in the browser, a substituted announce is
an alert; the signed DTLS fingerprint is checked on both sides."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.browser import chromium, static_site
from visavis.e2ee.identity import DeviceIdentity, b64, unb64, verification_code
from visavis.e2ee.keys import CallKeys, Outgoing
from visavis.e2ee.ratchet import SenderKey, ratchet
from visavis.signaling.web import WEB_DIR

pytestmark = pytest.mark.browser
CALL = "call-interop"
FP_JS = "sha-256 AA:BB:CC"
FP_PY = "sha-256 11:22:33"

SETUP = """async ([pyPublic, fp, call]) => {
  const keys = await import("/e2ee/keys.js");
  const id = await import("/e2ee/identity.js");
  const sink = { send: null, added: [], removed: [],
    async setSendKey(kid, key) { this.send = [String(kid), id.b64(key)]; },
    async addKey(kid, key) { this.added.push([String(kid), id.b64(key)]); },
    async removeKey(kid) { this.removed.push(String(kid)); } };
  const identity = await id.DeviceIdentity.generate();
  const directory = (d) => (d === "py" ? id.unb64(pyPublic) : d === "js" ? identity.public : null);
  const ck = await keys.CallKeys.create(call, "js", identity, directory, sink, fp);
  window.t = { keys, id, sink, identity, ck };
  return { pub: identity.publicB64, start: await ck.start() };
}"""

RECEIVE = """async ([sender, payload, join]) => {
  const { ck } = window.t;
  const out = join ? await ck.peerJoined(sender) : [];
  out.push(...(await ck.receive(sender, payload)));
  return { out, refused: ck.refused, alerts: ck.alerts, sink: window.t.sink };
}"""

CODE_AND_RATCHET = """async ([keysB64, kid, base, call, fp]) => {
  const { keys, id } = window.t;
  const map = Object.fromEntries(Object.entries(keysB64).map(([d, k]) => [d, id.unb64(k)]));
  const next = await keys.ratchet({ kid: BigInt(kid), baseKey: id.unb64(base) });
  const ck = window.t.ck;
  return { code: await id.verificationCode(call, map), kid: String(next.kid),
           base: id.b64(next.baseKey), fpOk: ck.checkFingerprint("py", fp),
           fpBad: ck.checkFingerprint("py", "sha-256 66:66"), alerts: ck.alerts };
}"""


def to_py(out: list[dict[str, Any]]) -> list[Outgoing]:
    return [Outgoing(o["toDevice"], o["payload"]) for o in out]


async def test_python_and_chromium_agree_keys_both_ways() -> None:
    py_id = DeviceIdentity.generate()
    directory: dict[str, bytes] = {"py": py_id.public}
    py = CallKeys(CALL, "py", py_id, directory.get, fingerprint=FP_PY)
    with static_site(WEB_DIR) as base:
        async with chromium() as browser:
            page = await browser.new_page()
            await page.goto(base + "/e2ee/keys.js")
            got = await page.evaluate(SETUP, [py_id.public_b64, FP_JS, CALL])
            directory["js"] = unb64(got["pub"])
            py.members.add("js")
            # Chromium announces to everyone: Python answers with its announce + key.
            (js_announce,) = to_py(got["start"])
            assert js_announce.to_device is None
            replies = py.receive("js", js_announce.payload)
            assert [o.to_device for o in replies] == ["js", "js"]
            # Python's messages open in Chromium; its answer (its key) opens in Python.
            result: dict[str, Any] = {}
            back: list[Outgoing] = []
            for i, message in enumerate(replies):
                result = await page.evaluate(RECEIVE, ["py", message.payload, i == 0])
                back += to_py(result["out"])
            assert result["refused"] == {} and result["alerts"] == []
            assert result["sink"]["added"] == [
                [str(py.keyring.current.kid), b64(py.keyring.current.base_key)]
            ]
            for message in back:
                assert py.receive("js", message.payload) == []
            assert py.refused == {} and py.alerts == []
            js_kid, js_key = result["sink"]["send"]
            # Python holds exactly the key Chromium encrypts with.
            assert py.keyring.context.has_key(int(js_kid))
            assert py.keyring._remote["js"][-1] == SenderKey(int(js_kid), unb64(js_key))

            # Same verification code and ratchet on both sides; the signed fingerprint.
            key = py.keyring.current
            both = {"py": py_id.public, "js": directory["js"]}
            keys_b64 = {d: b64(k) for d, k in both.items()}
            checks = await page.evaluate(
                CODE_AND_RATCHET,
                [keys_b64, str(key.kid), b64(key.base_key), CALL, FP_PY.lower()],
            )
            assert checks["code"] == verification_code(CALL, both)
            assert (int(checks["kid"]), unb64(checks["base"])) == (
                ratchet(key).kid,
                ratchet(key).base_key,
            )
            assert checks["fpOk"] is True and checks["fpBad"] is False
            assert [a["reason"] for a in checks["alerts"]] == ["fingerprint_mismatch"]
            assert py.check_fingerprint("js", FP_JS.lower())
            assert not py.check_fingerprint("js", "sha-256 66:66")

            # Refusals in the browser: a key message with a forged signature, another
            # call's message, then an announce whose signature does not verify.
            key_msg = json.loads(replies[1].payload)
            forged = dict(key_msg, sig=b64(bytes(64)))
            other = dict(key_msg, call="another-call")
            announce = json.loads(replies[0].payload)
            swapped = dict(announce, eph=b64(bytes(range(32))))
            for payload in (forged, other, swapped):
                result = await page.evaluate(RECEIVE, ["py", json.dumps(payload), False])
            assert result["refused"] == {"bad_signature": 2, "other_call": 1}
            assert [a["reason"] for a in result["alerts"]][-1] == "announce_signature"
