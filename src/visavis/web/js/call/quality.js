// Connection quality from getStats(): round-trip time, packet loss and bitrate, reduced
// to a level the call view shows (good / fair / poor). `summarize` is pure (a stats
// report as a Map or array of entries in, numbers out) and `judge` compares two samples.

/** Totals of one getStats() report. */
export function summarize(report, now) {
  const out = { at: now, rtt: null, bytesIn: 0, bytesOut: 0, packetsIn: 0, lost: 0, framesDecoded: 0, frameWidth: 0, frameHeight: 0 };
  const entries = typeof report.values === "function" ? [...report.values()] : report;
  let pair = null;
  for (const r of entries) {
    if (r.type === "transport" && r.selectedCandidatePairId) {
      pair = entries.find((c) => c.id === r.selectedCandidatePairId) ?? pair;
    }
    if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded" && !pair) pair = r;
    if (r.type === "inbound-rtp") {
      out.bytesIn += r.bytesReceived ?? 0;
      out.packetsIn += r.packetsReceived ?? 0;
      out.lost += Math.max(0, r.packetsLost ?? 0);
      if (r.kind === "video") {
        out.framesDecoded += r.framesDecoded ?? 0;
        out.frameWidth = Math.max(out.frameWidth, r.frameWidth ?? 0);
        out.frameHeight = Math.max(out.frameHeight, r.frameHeight ?? 0);
      }
    }
    if (r.type === "outbound-rtp") out.bytesOut += r.bytesSent ?? 0;
  }
  if (pair && typeof pair.currentRoundTripTime === "number") out.rtt = pair.currentRoundTripTime;
  return out;
}

/** Quality between two summaries: {level, rtt (ms), loss (0..1), kbpsIn, kbpsOut}. */
export function judge(prev, curr) {
  const seconds = prev ? (curr.at - prev.at) / 1000 : 0;
  const received = prev ? curr.packetsIn - prev.packetsIn : 0;
  const lost = prev ? curr.lost - prev.lost : 0;
  const loss = received + lost > 0 ? Math.max(0, lost) / (received + lost) : 0;
  const kbpsIn = seconds > 0 ? Math.max(0, (8 * (curr.bytesIn - prev.bytesIn)) / seconds / 1000) : 0;
  const kbpsOut = seconds > 0 ? Math.max(0, (8 * (curr.bytesOut - prev.bytesOut)) / seconds / 1000) : 0;
  const rtt = curr.rtt == null ? null : Math.round(curr.rtt * 1000);
  let level = "good";
  if (prev && received === 0 && lost === 0) level = "poor"; // nothing arrives
  else if (loss > 0.1 || (rtt != null && rtt > 500)) level = "poor";
  else if (loss > 0.02 || (rtt != null && rtt > 250)) level = "fair";
  return { level, rtt, loss, kbpsIn: Math.round(kbpsIn), kbpsOut: Math.round(kbpsOut) };
}

export const LEVEL_LABELS = { good: "Good connection", fair: "Fair connection", poor: "Poor connection" };
