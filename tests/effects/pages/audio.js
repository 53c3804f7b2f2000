// Audio helpers for the effects test pages: measure a node's levels, loop tracks through a
// real RTCPeerConnection.
import { createLevelMeter } from "/effects/level-meter.js";

/** Levels (RMS per 20 ms window, per channel) of `node` over `ms`. */
export async function levels(ctx, node, channels, ms) {
  const meter = await createLevelMeter(ctx, node, { channels });
  await new Promise((resolve) => setTimeout(resolve, ms));
  meter.close();
  return meter.levels;
}

/** Send `tracks` through a loopback RTCPeerConnection pair; resolve to the received tracks
 *  (in order). Remote audio plays into Web Audio only while a media element plays it
 *  (Chromium), so each received stream also gets a muted <audio>. */
export async function loopback(tracks) {
  const a = new RTCPeerConnection();
  const b = new RTCPeerConnection();
  a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
  b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
  const received = [];
  const all = new Promise((resolve) => {
    b.ontrack = (e) => {
      received.push(e.track);
      const audio = new Audio();
      audio.muted = true;
      audio.srcObject = new MediaStream([e.track]);
      audio.play().catch(() => {});
      if (received.length === tracks.length) resolve(received);
    };
  });
  for (const track of tracks) a.addTrack(track, new MediaStream([track]));
  await a.setLocalDescription();
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription();
  await a.setRemoteDescription(b.localDescription);
  const result = await all;
  const mids = a.getTransceivers().map((t) => t.mid);
  // order the received tracks as sent (by transceiver mid)
  const byMid = new Map(b.getTransceivers().map((t) => [t.mid, t.receiver.track]));
  return mids.map((mid) => byMid.get(mid) ?? result.shift());
}
