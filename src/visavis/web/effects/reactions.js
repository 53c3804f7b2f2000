// Reactions: FaceTime's eight, sent end to end, rate limited, shown on the sender's tile.
//
//   const cipher = await createReactionCipher(callSecret);   // or null: see "Protection"
//   const reactions = createReactions({ selfId, cipher, send: (bytes) => channel.send(bytes),
//                                       onReaction: (participantId, kind) => play(...) });
//   channel.onmessage = ({ data }) => reactions.receive(data, remoteParticipantId);
//   reactions.react("hearts");                    // from the menu
//   addEventListener("keydown", (e) => { const kind = reactionShortcut(e);
//                                        if (kind) { e.preventDefault(); reactions.react(kind); } });
//
// Transport: an RTCDataChannel (reactionChannel(pc), negotiated, so no signaling message
// announces it) in 1:1 calls, whose DTLS runs end to end between the two browsers; the
// bytes are opaque to this module, so any transport that carries bytes to the other
// participants (an E2EE channel through the SFU) can carry them.
//
// Protection: with a cipher, every message is AES-GCM sealed with a key derived (HKDF) from
// the call's end-to-end secret, the sender's participant id bound in as associated data, so
// a server that relays the bytes can neither read nor forge nor re-attribute them. Without
// a cipher (no call secret yet) a message is sent as its plain encoding and must only go
// over a channel that is itself end to end (the 1:1 DTLS data channel). docs/effects.md says
// which protects what.

export const REACTIONS = [
  { kind: "hearts", label: "Hearts", key: "1" },
  { kind: "thumbs_up", label: "Thumbs up", key: "2" },
  { kind: "thumbs_down", label: "Thumbs down", key: "3" },
  { kind: "balloons", label: "Balloons", key: "4" },
  { kind: "confetti", label: "Confetti", key: "5" },
  { kind: "fireworks", label: "Fireworks", key: "6" },
  { kind: "rain", label: "Rain", key: "7" },
  { kind: "lasers", label: "Lasers", key: "8" },
];
const KINDS = new Set(REACTIONS.map((r) => r.kind));
const BY_KEY = new Map(REACTIONS.map((r) => [`Digit${r.key}`, r.kind]));

export const MESSAGE_VERSION = 1;
export const MAX_MESSAGE_BYTES = 256;
const SEALED_MAGIC = 0x56; // "V"
const PLAIN_MAGIC = 0x76; // "v"
const IV_BYTES = 12;
const HKDF_INFO = "visavis reactions v1";

/** The reaction for a keydown event: Alt+1 … Alt+8 (by key position, so any layout), or
 *  null. Keys typed into text fields and auto-repeats are not reactions. */
export function reactionShortcut(event) {
  if (!event.altKey || event.ctrlKey || event.metaKey || event.repeat) return null;
  const target = event.target;
  if (target?.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target?.tagName ?? "")) {
    return null;
  }
  return BY_KEY.get(event.code) ?? null;
}

/** A token bucket: `burst` reactions at once, then one per `every` ms. Time is passed in. */
export function createRateLimiter({ burst = 3, every = 1500 } = {}) {
  let tokens = burst;
  let last = null;
  return {
    allow(now) {
      if (last !== null) tokens = Math.min(burst, tokens + (now - last) / every);
      last = now;
      if (tokens < 1) return false;
      tokens -= 1;
      return true;
    },
  };
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** The plain message: `{"v":1,"kind":"hearts","id":"<16 hex>"}` as UTF-8 JSON. */
export function encodeReaction({ kind, id }) {
  if (!KINDS.has(kind)) throw new Error(`unknown reaction: ${kind}`);
  if (!/^[0-9a-f]{16}$/.test(id)) throw new Error("a reaction id is 16 lowercase hex digits");
  return encoder.encode(JSON.stringify({ v: MESSAGE_VERSION, kind, id }));
}

/** Parse and check a plain message; throws ReactionError("malformed") on anything else. */
export function decodeReaction(bytes) {
  let message;
  try {
    message = JSON.parse(decoder.decode(bytes));
  } catch {
    throw new ReactionError("malformed", "not UTF-8 JSON");
  }
  if (typeof message !== "object" || message === null || Array.isArray(message)) {
    throw new ReactionError("malformed", "not an object");
  }
  const keys = Object.keys(message).sort().join(",");
  if (keys !== "id,kind,v" || message.v !== MESSAGE_VERSION) {
    throw new ReactionError("malformed", `unexpected fields or version: ${keys}`);
  }
  if (!KINDS.has(message.kind)) throw new ReactionError("malformed", "unknown reaction");
  if (typeof message.id !== "string" || !/^[0-9a-f]{16}$/.test(message.id)) {
    throw new ReactionError("malformed", "bad id");
  }
  return { kind: message.kind, id: message.id };
}

export class ReactionError extends Error {
  constructor(reason, message) {
    super(`${reason}: ${message}`);
    this.reason = reason;
  }
}

function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (typeof data === "string") return encoder.encode(data);
  throw new ReactionError("malformed", "not bytes");
}

/**
 * An AES-GCM-128 cipher for reactions from the call's end-to-end secret: raw bytes
 * (ArrayBuffer/Uint8Array, e.g. the E2EE layer's exported base key) or an HKDF CryptoKey.
 * The key is derived with HKDF-SHA-256 (info "visavis reactions v1", salt `callId`), so it
 * is separate from the media keys derived from the same secret. `keyId` (0-255) names the
 * secret's generation so that a receiver can tell a rekeyed message from a forged one.
 */
export async function createReactionCipher(secret, { callId = "", keyId = 0 } = {}) {
  const base =
    secret instanceof CryptoKey
      ? secret
      : await crypto.subtle.importKey("raw", toBytes(secret), "HKDF", false, ["deriveKey"]);
  const key = await crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: encoder.encode(callId), info: encoder.encode(HKDF_INFO) },
    base,
    { name: "AES-GCM", length: 128 },
    false,
    ["encrypt", "decrypt"],
  );
  const aad = (header, senderId) => {
    const sender = encoder.encode(senderId);
    const out = new Uint8Array(header.length + sender.length);
    out.set(header);
    out.set(sender, header.length);
    return out;
  };
  return {
    keyId,
    /** magic | keyId | iv (12) | AES-GCM(plain) with AAD = magic | keyId | senderId. */
    async seal(plain, senderId) {
      const header = new Uint8Array([SEALED_MAGIC, keyId]);
      const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
      const sealed = new Uint8Array(
        await crypto.subtle.encrypt(
          { name: "AES-GCM", iv, additionalData: aad(header, senderId) },
          key,
          plain,
        ),
      );
      const out = new Uint8Array(2 + IV_BYTES + sealed.length);
      out.set(header);
      out.set(iv, 2);
      out.set(sealed, 2 + IV_BYTES);
      return out;
    },
    async open(bytes, senderId) {
      if (bytes[0] !== SEALED_MAGIC) throw new ReactionError("unsealed", "expected a sealed reaction");
      if (bytes[1] !== keyId) throw new ReactionError("key", `key ${bytes[1]}, expected ${keyId}`);
      if (bytes.length < 2 + IV_BYTES + 16) throw new ReactionError("malformed", "too short");
      try {
        const plain = await crypto.subtle.decrypt(
          {
            name: "AES-GCM",
            iv: bytes.subarray(2, 2 + IV_BYTES),
            additionalData: aad(bytes.subarray(0, 2), senderId),
          },
          key,
          bytes.subarray(2 + IV_BYTES),
        );
        return new Uint8Array(plain);
      } catch {
        throw new ReactionError("decrypt", "authentication failed");
      }
    },
  };
}

/**
 * Per-sender keys, for calls whose end-to-end encryption gives every sender its own key
 * (SFrame sender keys): a reaction is sealed with a key derived from the sender's own
 * current key and opened with the key of the participant it came from, so only holders
 * of that sender's key (the call's members) can read it and none can forge another
 * member's. `keyFor(participantId)` returns `{secret, keyId}` (raw bytes, 0..255) or null.
 */
export function createSenderKeyCipher({ keyFor, callId = "" }) {
  const derived = new Map(); // participantId -> {secret, keyId, cipher}
  async function cipherFor(participantId) {
    const current = await keyFor(participantId);
    if (!current) throw new ReactionError("key", `no key for ${participantId}`);
    const known = derived.get(participantId);
    if (known && known.secret === current.secret && known.keyId === current.keyId) {
      return known.cipher;
    }
    const cipher = await createReactionCipher(current.secret, { callId, keyId: current.keyId });
    derived.set(participantId, { ...current, cipher });
    return cipher;
  }
  return {
    seal: async (plain, selfId) => (await cipherFor(selfId)).seal(plain, selfId),
    open: async (bytes, fromId) => (await cipherFor(fromId)).open(bytes, fromId),
    forget: (participantId) => derived.delete(participantId),
  };
}

/**
 * The reactions of one participant in one call. `send(bytes)` delivers to the others;
 * `onReaction(participantId, kind)` plays one (for this participant's own reactions too,
 * on their own tile, as FaceTime does). `cipher` from createReactionCipher, or null when the
 * transport is itself end to end (see the header). `clock` is injectable for tests.
 */
export function createReactions({
  selfId,
  send,
  onReaction,
  cipher = null,
  limits = { burst: 3, every: 1500 },
  clock = () => performance.now(),
}) {
  const outgoing = createRateLimiter(limits);
  // Receivers allow a little more than senders do, so clock jitter never drops an honest
  // reaction, while a flood from a modified client is cut off.
  const incoming = new Map();
  const seen = new Map(); // id -> time, to drop replays within the replay window
  const REPLAY_WINDOW = 60000;
  const stats = {
    sent: 0,
    received: 0,
    limited: 0,
    dropped: { rate: 0, malformed: 0, decrypt: 0, key: 0, unsealed: 0, duplicate: 0, size: 0 },
  };

  function forget(now) {
    for (const [id, at] of seen) {
      if (now - at > REPLAY_WINDOW) seen.delete(id);
      else break;
    }
  }

  return {
    stats,
    sealed: Boolean(cipher),
    /** Send `kind` (rate limited: returns false when the limit refused it). */
    async react(kind) {
      if (!KINDS.has(kind)) throw new Error(`unknown reaction: ${kind}`);
      if (!outgoing.allow(clock())) {
        stats.limited += 1;
        return false;
      }
      const plain = encodeReaction({ kind, id: randomId() });
      const bytes = cipher ? await cipher.seal(plain, selfId) : plainFrame(plain);
      send(bytes);
      stats.sent += 1;
      onReaction?.(selfId, kind);
      return true;
    },
    /** Bytes from `fromId`: plays the reaction, or counts why it was dropped. */
    async receive(data, fromId) {
      const now = clock();
      try {
        const bytes = toBytes(data);
        if (bytes.length > MAX_MESSAGE_BYTES) throw new ReactionError("size", "too large");
        let plain;
        if (cipher) plain = await cipher.open(bytes, fromId);
        else if (bytes[0] === PLAIN_MAGIC) plain = bytes.subarray(1);
        else throw new ReactionError("key", "a sealed reaction, and this call has no key");
        const { kind, id } = decodeReaction(plain);
        forget(now);
        if (seen.has(id)) throw new ReactionError("duplicate", id);
        seen.set(id, now);
        if (!incoming.has(fromId)) {
          incoming.set(fromId, createRateLimiter({ burst: limits.burst + 2, every: limits.every / 2 }));
        }
        if (!incoming.get(fromId).allow(now)) throw new ReactionError("rate", fromId);
        stats.received += 1;
        onReaction?.(fromId, kind);
        return kind;
      } catch (error) {
        const reason = error instanceof ReactionError ? error.reason : "malformed";
        stats.dropped[reason] = (stats.dropped[reason] ?? 0) + 1;
        return null;
      }
    },
  };
}

function plainFrame(plain) {
  const out = new Uint8Array(plain.length + 1);
  out[0] = PLAIN_MAGIC;
  out.set(plain, 1);
  return out;
}

export const REACTION_CHANNEL = { label: "visavis-reactions", id: 7 };

/** The reactions data channel of a peer connection: negotiated (both sides call this before
 *  or while negotiating; nothing about it travels through signaling), unordered, and
 *  retransmitted for at most a second: a lost packet must not lose a reaction, but one
 *  arriving seconds late is worth less than none. */
export function reactionChannel(pc) {
  const channel = pc.createDataChannel(REACTION_CHANNEL.label, {
    negotiated: true,
    id: REACTION_CHANNEL.id,
    ordered: false,
    maxPacketLifeTime: 1000,
  });
  channel.binaryType = "arraybuffer";
  return channel;
}
