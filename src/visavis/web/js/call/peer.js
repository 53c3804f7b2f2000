// THE place where this client creates RTCPeerConnections, RTCRtpSenders and takes
// RTCRtpReceivers: each runs the hooks of core/hooks.js, so E2EE can attach transforms
// and read the configuration in one spot for 1:1 and group calls alike.

import { hooks, run, settings } from "../core/hooks.js";

/** A peer connection for `info` ({purpose, callId}), with our ICE servers. */
export function createPeerConnection(iceServers, info) {
  const config = { iceServers: iceServers ?? [], bundlePolicy: "max-bundle", rtcpMuxPolicy: "require" };
  if (settings.encodedInsertableStreams) config.encodedInsertableStreams = true;
  for (const fn of hooks.peerConfig) fn(config, info);
  const pc = new RTCPeerConnection(config);
  run("peerConnection", pc, info);
  return pc;
}

// What a LocalMedia kind ("audio", "video" or "screen") is on the wire.
const trackKind = (kind) => (kind === "audio" ? "audio" : "video");

/**
 * Send `kind` ("audio", "video" or "screen") from `media` (call/media.js LocalMedia) on
 * `pc`: a sendrecv or sendonly transceiver whose sender follows media's outgoing track.
 * `encodings` for simulcast. Hooks see the wire kind, and `source: "screen"` for a share.
 */
export function addSender(pc, media, kind, info, { direction = "sendrecv", encodings, streams } = {}) {
  const track = media.outgoing(kind);
  const init = { direction };
  if (encodings) init.sendEncodings = encodings;
  if (streams) init.streams = streams;
  const transceiver = pc.addTransceiver(track ?? trackKind(kind), init);
  media.attach(transceiver.sender, kind);
  run("sender", transceiver.sender, { ...info, kind: trackKind(kind), ...(kind === "screen" ? { source: "screen" } : {}) });
  return transceiver;
}

/** Every remote track of `pc` goes to `onTrack(event)` after the receiver hook ran. */
export function onRemoteTracks(pc, info, onTrack) {
  pc.addEventListener("track", (event) => {
    run("receiver", event.receiver, { ...info, kind: event.track.kind, mid: event.transceiver?.mid });
    onTrack(event);
  });
}

/** The answering side: send `kind` on a transceiver the remote offer created (`send`:
 * even though the device is not open yet; its track comes with LocalMedia.refresh()).
 * A screen slot is sendrecv even while nothing is shared, so a share needs no
 * renegotiation. */
export function useTransceiver(transceiver, media, kind, info, send = false) {
  const track = media.outgoing(kind);
  if (track) transceiver.sender.replaceTrack(track);
  transceiver.direction = track || send || kind === "screen" ? "sendrecv" : "recvonly";
  media.attach(transceiver.sender, kind);
  run("sender", transceiver.sender, { ...info, kind: trackKind(kind), ...(kind === "screen" ? { source: "screen" } : {}) });
  return transceiver;
}
