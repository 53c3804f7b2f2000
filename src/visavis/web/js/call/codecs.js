// The room's one video codec (docs/sfu.md, "Codecs"): the SFU forwards payloads as they
// are, so every member of a group call sends and receives the codec the room was created
// with; `joined.video_codec` names it. These helpers turn it into setCodecPreferences
// lists, in the variant the SFU accepts (H.264: packetization-mode=1, constrained
// baseline 42e01f; VP9: profile 0).

function fmtp(codec) {
  const out = {};
  for (const part of (codec.sdpFmtpLine ?? "").split(";")) {
    const [k, v = ""] = part.split("=");
    if (k.trim()) out[k.trim().toLowerCase()] = v.trim().toLowerCase();
  }
  return out;
}

/** Is `codec` (an RTCRtpCodec) the room's `name` ("vp8", "vp9", "h264", "av1")? */
export function isRoomCodec(codec, name) {
  if (codec.mimeType.toLowerCase() !== `video/${name}`) return false;
  const p = fmtp(codec);
  if (name === "h264") return p["packetization-mode"] === "1" && p["profile-level-id"] === "42e01f";
  if (name === "vp9") return (p["profile-id"] ?? "0") === "0";
  return true;
}

/** The preference list for `name` out of `capabilities` (RTCRtpSender/Receiver
 * .getCapabilities("video")): its entries, then retransmission; null if absent. */
export function codecPreferences(capabilities, name) {
  const codecs = capabilities?.codecs ?? [];
  const wanted = codecs.filter((c) => isRoomCodec(c, name));
  if (!wanted.length) return null;
  return [...wanted, ...codecs.filter((c) => c.mimeType.toLowerCase() === "video/rtx")];
}

/** Apply the room's codec to every video transceiver of `pc` (before createOffer).
 * Returns an error message if this browser cannot send or receive it, else null. */
export function preferRoomCodec(pc, name) {
  for (const t of pc.getTransceivers()) {
    if (t.receiver.track?.kind !== "video" || t.stopped || t.currentDirection === "stopped") continue;
    const sends = t.direction === "sendonly" || t.direction === "sendrecv";
    const prefs = codecPreferences((sends ? RTCRtpSender : RTCRtpReceiver).getCapabilities("video"), name);
    if (!prefs) return `this browser cannot ${sends ? "send" : "receive"} ${name.toUpperCase()}, the video codec of this call`;
    try {
      t.setCodecPreferences(prefs);
    } catch {
      // Browsers that check preferences against the receiver's capabilities only.
      const fallback = codecPreferences(RTCRtpReceiver.getCapabilities("video"), name);
      if (!fallback) return `this browser cannot receive ${name.toUpperCase()}, the video codec of this call`;
      t.setCodecPreferences(fallback);
    }
  }
  return null;
}

/** Simulcast `encodings` for the room's codec: VP9 and AV1 are sent as simulcast (one
 * stream per rid, which the SFU switches between) only when each encoding names its
 * scalability mode; without one Chromium turns several VP9 encodings into one SVC stream
 * on the first rid. L1T3: one spatial layer, three temporal ones (thumbnails get the
 * base frame rate). */
export function withScalability(encodings, name) {
  if (name !== "vp9" && name !== "av1") return encodings;
  return encodings.map((e) => ({ ...e, scalabilityMode: "L1T3" }));
}
