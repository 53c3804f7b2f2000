// Extension points for the other parts of the client (E2EE, effects), in one module so
// they hook in without editing the call code. Every hook is a set of functions; `on`
// adds one and returns its removal.
//
//   peerConfig(config, info)        before each RTCPeerConnection is created: edit config
//                                   (e.g. config.encodedInsertableStreams = true)
//   peerConnection(pc, info)        after it is created
//   sender(sender, info)            each RTCRtpSender this client creates (track may change)
//   receiver(receiver, info)        each RTCRtpReceiver with a remote track
//   localTrack(track, kind) → track each local camera/microphone track before it goes out;
//                                   return a replacement (e.g. a blurred canvas track) or
//                                   the same track. See call/media.js, LocalMedia.refresh().
//   callEvent(event)                a signaling event of the current call that the call code
//                                   does not handle itself (e.g. call.reaction)
//
// `info` says what the connection is for: {purpose: "direct"|"group", callId, peer?}.

export const hooks = {
  peerConfig: new Set(),
  peerConnection: new Set(),
  sender: new Set(),
  receiver: new Set(),
  localTrack: new Set(),
  callEvent: new Set(),
};

export const settings = {
  // Chromium needs this at creation for createEncodedStreams(); off unless E2EE asks,
  // because with it on a sender whose streams nobody reads sends nothing.
  encodedInsertableStreams: false,
  // Extra getUserMedia audio constraints (effects/: no browser noise suppression while
  // our voice isolation is on); null for the browser's defaults.
  audioConstraints: null,
};

export function on(name, fn) {
  const set = hooks[name];
  if (!set) throw new Error(`unknown hook ${name}`);
  set.add(fn);
  return () => set.delete(fn);
}

export function run(name, ...args) {
  for (const fn of hooks[name]) {
    try {
      fn(...args);
    } catch (err) {
      console.error(`visavis hook ${name} failed`, err);
    }
  }
}
