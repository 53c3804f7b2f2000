// The E2EE worker: every encoded frame of every sender and receiver passes through here
// (createEncodedStreams on Chromium, RTCRtpScriptTransform elsewhere). Keys arrive from
// the page: {type: "sendKey", kid, key} and {type: "addKey" | "removeKey", kid, key}.
// Frames that fail (unknown KID, tampered, replayed, truncated) are dropped and counted;
// {type: "stats"} answers with the counters.
import { Context, SendKey } from "./sframe.js";
import { decryptFrame, encryptFrame } from "./frames.js";

const context = new Context();
let sendKey = null;
const stats = { encrypted: 0, decrypted: 0, dropped: {} };

function drop(reason) {
  stats.dropped[reason] = (stats.dropped[reason] || 0) + 1;
}

function codecOf(frame, kind) {
  const mime = frame.getMetadata?.().mimeType;
  if (mime) return mime.split("/").pop().toLowerCase();
  return kind === "audio" ? "opus" : "vp8";
}

function transformer(operation, kind) {
  return new TransformStream({
    async transform(frame, controller) {
      const data = new Uint8Array(frame.data);
      try {
        if (operation === "encrypt") {
          if (!sendKey) return drop("no_send_key"); // never send a frame in clear
          frame.data = (await encryptFrame(sendKey, codecOf(frame, kind), data)).buffer;
          stats.encrypted++;
        } else {
          frame.data = (await decryptFrame(context, codecOf(frame, kind), data)).buffer;
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

self.onmessage = async (event) => {
  const msg = event.data;
  if (msg.type === "streams") {
    pipe(msg.readable, msg.writable, msg.operation, msg.kind);
  } else if (msg.type === "sendKey") {
    sendKey = await SendKey.create(BigInt(msg.kid), new Uint8Array(msg.key));
    self.postMessage({ type: "ack", id: msg.id });
  } else if (msg.type === "addKey") {
    await context.addKey(BigInt(msg.kid), new Uint8Array(msg.key));
    self.postMessage({ type: "ack", id: msg.id });
  } else if (msg.type === "removeKey") {
    context.removeKey(BigInt(msg.kid));
    self.postMessage({ type: "ack", id: msg.id });
  } else if (msg.type === "stats") {
    self.postMessage({ type: "stats", id: msg.id, stats });
  }
};

// RTCRtpScriptTransform (Firefox, Safari; Chromium 141+ but see FIELD-NOTES).
self.onrtctransform = (event) => {
  const { operation, kind } = event.transformer.options;
  pipe(event.transformer.readable, event.transformer.writable, operation, kind);
};
