// Has the SFU stopped sending? A group call's peer connection always receives something
// from a live SFU: media from the others and, at least once a second, RTCP (receiver
// reports and REMB about what this device publishes; docs/sfu.md). So bytes received on
// the connection that stop growing for a few seconds mean the media path or the node is
// gone, even while the control WebSocket still looks open. Pure: the caller feeds it
// getStats() samples (docs/fleet.md, "Participants' reports").

/** Bytes received on the connection's transport in one getStats() report (a Map or an
 * array of entries): the transport's own count where the browser has one (Chromium),
 * else the selected candidate pair's (Firefox has no transport stats). */
export function bytesReceived(report) {
  const entries = typeof report.values === "function" ? [...report.values()] : report;
  let transport = 0;
  let pair = 0;
  for (const r of entries) {
    if (r.type === "transport") transport += r.bytesReceived ?? 0;
    else if (r.type === "candidate-pair" && (r.selected || r.nominated) && r.state === "succeeded") pair += r.bytesReceived ?? 0;
  }
  return transport || pair;
}

/** Whether any media packet has arrived on this connection yet (inbound RTP). */
export function mediaReceived(report) {
  const entries = typeof report.values === "function" ? [...report.values()] : report;
  return entries.some((r) => r.type === "inbound-rtp" && (r.packetsReceived ?? 0) > 0);
}

export class StallDetector {
  /** @param {number} stallMs how long without a byte counts as lost */
  constructor(stallMs) {
    this.stallMs = stallMs;
    this.bytes = 0;
    this.since = null; // when the count last grew (null: nothing received yet)
  }

  /** One sample at `now` (ms): true when bytes once flowed and have not grown for
   * `stallMs` (a connection that never received anything is ICE's to judge). */
  observe(now, bytes) {
    if (bytes > this.bytes) {
      this.bytes = bytes;
      this.since = now;
      return false;
    }
    return this.since !== null && now - this.since >= this.stallMs;
  }

  /** Nothing is expected now (nobody else in the room): restart the clock, so that the
   * quiet time alone is never taken for a stall. */
  idle(now) {
    if (this.since !== null) this.since = now;
  }
}
