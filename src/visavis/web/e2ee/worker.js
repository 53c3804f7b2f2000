// The E2EE worker: every encoded frame of every sender and receiver passes through here
// (createEncodedStreams on Chromium, RTCRtpScriptTransform elsewhere), and so do the
// application messages sealed with the call's keys (seal / open). Keys arrive from the
// page (FrameCrypto): {type: "sendKey", kid, key}, {type: "addKey" | "removeKey", kid,
// key}, {type: "erase"}. Frames that fail (unknown KID, tampered, replayed, truncated)
// are dropped and counted; {type: "stats"} answers with the counters.
//
// Receivers follow a sender's ratchet by themselves: a frame under generation g+k
// (k <= MAX_SKIP) of a sender whose generation g we hold installs ratchet^k(key).
import { Context, SendKey, decodeHeader } from "./sframe.js";
import { decryptFrame, encryptFrame, frameKid } from "./frames.js";
import { MAX_SKIP, dataKey, ratchet } from "./keys.js";

const media = new Context();
const data = new Context();
const newest = new Map(); // prefix (string) → {kid, baseKey}: the base of catch-up
let sendKey = null;
let sealKey = null;
const stats = { encrypted: 0, decrypted: 0, dropped: {}, sealed: 0, opened: 0, caughtUp: 0 };

function drop(reason) {
  stats.dropped[reason] = (stats.dropped[reason] || 0) + 1;
}

function codecOf(frame, kind) {
  const mime = frame.getMetadata?.().mimeType;
  if (mime) return mime.split("/").pop().toLowerCase();
  return kind === "audio" ? "opus" : "vp8";
}

async function addKey(kid, baseKey) {
  await media.addKey(kid, baseKey);
  await data.addKey(kid, await dataKey(kid, baseKey));
  const prefix = String(kid >> 8n);
  const known = newest.get(prefix);
  if (!known || known.kid < kid) newest.set(prefix, { kid, baseKey });
}

function removeKey(kid) {
  media.removeKey(kid);
  data.removeKey(kid);
  const prefix = String(kid >> 8n);
  if (newest.get(prefix)?.kid === kid) newest.delete(prefix);
}

/** True if `kid` is a later generation of a sender we know: its key is installed now. */
async function catchUp(kid) {
  const base = newest.get(String(kid >> 8n));
  if (!base || kid <= base.kid || kid - base.kid > BigInt(MAX_SKIP)) return false;
  let key = base;
  while (key.kid < kid) key = await ratchet(key);
  await addKey(key.kid, key.baseKey);
  stats.caughtUp++;
  return true;
}

async function decrypt(context, codec, bytes) {
  try {
    return await decryptFrame(context, codec, bytes);
  } catch (e) {
    if (e.reason !== "unknown_kid") throw e;
    const kid = frameKid(codec, bytes);
    if (!(await catchUp(kid))) throw e;
    return decryptFrame(context, codec, bytes);
  }
}

function transformer(operation, kind) {
  return new TransformStream({
    async transform(frame, controller) {
      const bytes = new Uint8Array(frame.data);
      try {
        if (operation === "encrypt") {
          if (!sendKey) return drop("no_send_key"); // never send a frame in clear
          frame.data = (await encryptFrame(sendKey, codecOf(frame, kind), bytes)).buffer;
          stats.encrypted++;
        } else {
          frame.data = (await decrypt(media, codecOf(frame, kind), bytes)).buffer;
          stats.decrypted++;
        }
        controller.enqueue(frame);
      } catch (e) {
        drop(e.reason || "error");
      }
    },
  });
}

function pipe(readable, writable, operation, kind) {
  readable.pipeThrough(transformer(operation, kind)).pipeTo(writable).catch(() => {});
}

const handlers = {
  async sendKey(msg) {
    const kid = BigInt(msg.kid);
    const key = new Uint8Array(msg.key);
    sendKey = await SendKey.create(kid, key);
    sealKey = await SendKey.create(kid, await dataKey(kid, key));
  },
  async addKey(msg) {
    await addKey(BigInt(msg.kid), new Uint8Array(msg.key));
  },
  async removeKey(msg) {
    removeKey(BigInt(msg.kid));
  },
  async erase() {
    media.clear();
    data.clear();
    newest.clear();
    sendKey = null;
    sealKey = null;
  },
  async stats() {
    return { stats };
  },
  async seal(msg) {
    if (!sealKey) throw Object.assign(new Error("no key yet"), { reason: "no_send_key" });
    const out = await sealKey.protect(new Uint8Array(msg.bytes));
    stats.sealed++;
    return { bytes: out, kid: String(sealKey.kid) };
  },
  async open(msg) {
    const bytes = new Uint8Array(msg.bytes);
    let opened;
    try {
      opened = await data.unprotect(bytes);
    } catch (e) {
      if (e.reason !== "unknown_kid" || !(await catchUp(decodeHeader(bytes).kid))) throw e;
      opened = await data.unprotect(bytes);
    }
    stats.opened++;
    return { bytes: opened.plaintext, kid: String(opened.kid) };
  },
};

self.onmessage = async (event) => {
  const msg = event.data;
  if (msg.type === "streams") {
    pipe(msg.readable, msg.writable, msg.operation, msg.kind);
    return;
  }
  const handler = handlers[msg.type];
  if (!handler) return;
  try {
    self.postMessage({ type: "ack", id: msg.id, ...(await handler(msg)) });
  } catch (e) {
    if (msg.type === "open") drop(`data_${e.reason || "error"}`);
    self.postMessage({ type: "error", id: msg.id, reason: e.reason || "error", message: String(e.message) });
  }
};

// RTCRtpScriptTransform (Firefox, Safari; Chromium 141+ but see FIELD-NOTES).
self.onrtctransform = (event) => {
  const { operation, kind } = event.transformer.options;
  pipe(event.transformer.readable, event.transformer.writable, operation, kind);
};
