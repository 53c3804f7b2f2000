import { test } from "node:test";
import assert from "node:assert/strict";
import { StallDetector, bytesReceived, mediaReceived } from "../../../src/visavis/web/js/call/medialoss.js";

test("bytesReceived: the transport's count, else the selected pair's", () => {
  const chromium = [
    { id: "T", type: "transport", bytesReceived: 5000 },
    { id: "P", type: "candidate-pair", nominated: true, state: "succeeded", bytesReceived: 4900 },
    { id: "V", type: "inbound-rtp", bytesReceived: 4000 },
  ];
  assert.equal(bytesReceived(new Map(chromium.map((r) => [r.id, r]))), 5000);
  const firefox = [
    { id: "P1", type: "candidate-pair", selected: true, state: "succeeded", bytesReceived: 700 },
    { id: "P2", type: "candidate-pair", selected: false, state: "failed", bytesReceived: 9 },
  ];
  assert.equal(bytesReceived(firefox), 700);
  assert.equal(bytesReceived([]), 0);
});

test("a stall is bytes that once flowed and then stopped for stallMs", () => {
  const d = new StallDetector(4000);
  assert.equal(d.observe(0, 0), false); // nothing yet: not a stall, however long
  assert.equal(d.observe(10_000, 0), false);
  assert.equal(d.observe(11_000, 100), false);
  assert.equal(d.observe(12_000, 100), false);
  assert.equal(d.observe(14_999, 100), false);
  assert.equal(d.observe(15_000, 100), true); // 4 s since the count last grew
  assert.equal(d.observe(16_000, 150), false); // flowing again
  assert.equal(d.observe(19_000, 150), false);
  assert.equal(d.observe(20_000, 150), true);
});

test("quiet time while nothing is expected is not a stall", () => {
  const d = new StallDetector(4000);
  d.observe(0, 100);
  d.idle(3000); // alone in the room from 3 s to 9 s
  d.idle(9000);
  assert.equal(d.observe(12_000, 100), false);
  assert.equal(d.observe(13_000, 100), true);
  const fresh = new StallDetector(4000);
  fresh.idle(5000);
  assert.equal(fresh.observe(20_000, 0), false);
});

test("mediaReceived: some inbound RTP packet arrived", () => {
  assert.equal(mediaReceived([{ type: "transport", bytesReceived: 900 }]), false);
  assert.equal(mediaReceived([{ type: "inbound-rtp", packetsReceived: 0 }]), false);
  assert.equal(mediaReceived(new Map([["A", { type: "inbound-rtp", packetsReceived: 3 }]])), true);
});
