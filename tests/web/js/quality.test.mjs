import { test } from "node:test";
import assert from "node:assert/strict";
import { judge, summarize } from "../../../src/visavis/web/js/call/quality.js";

const report = (bytes, packets, lost, rtt, frames) => [
  { id: "T", type: "transport", selectedCandidatePairId: "P" },
  { id: "P", type: "candidate-pair", currentRoundTripTime: rtt },
  { id: "V", type: "inbound-rtp", kind: "video", bytesReceived: bytes, packetsReceived: packets, packetsLost: lost, framesDecoded: frames, frameWidth: 640, frameHeight: 480 },
  { id: "A", type: "inbound-rtp", kind: "audio", bytesReceived: 0, packetsReceived: 0, packetsLost: 0 },
  { id: "O", type: "outbound-rtp", kind: "video", bytesSent: bytes },
];

test("summarize reads the selected pair, inbound and outbound totals", () => {
  const s = summarize(new Map(report(1000, 10, 1, 0.05, 7).map((r) => [r.id, r])), 0);
  assert.equal(s.rtt, 0.05);
  assert.equal(s.bytesIn, 1000);
  assert.equal(s.framesDecoded, 7);
  assert.equal(s.frameWidth, 640);
});

test("judge: good, fair (loss), poor (rtt, or nothing arrives)", () => {
  const a = summarize(report(0, 0, 0, 0.02, 0), 0);
  const good = judge(a, summarize(report(125000, 1000, 0, 0.02, 30), 1000));
  assert.equal(good.level, "good");
  assert.equal(good.kbpsIn, 1000);
  assert.equal(good.rtt, 20);
  assert.equal(judge(a, summarize(report(1000, 950, 50, 0.02, 30), 1000)).level, "fair");
  assert.equal(judge(a, summarize(report(1000, 1000, 0, 0.8, 30), 1000)).level, "poor");
  assert.equal(judge(a, summarize(report(0, 0, 0, 0.02, 0), 1000)).level, "poor");
  assert.equal(judge(null, a).level, "good");
});
