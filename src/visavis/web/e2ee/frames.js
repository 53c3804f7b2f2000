// SFrame applied to encoded frames, as visavis/e2ee/frames.py: the codec's routing
// prefix stays clear and is authenticated as SFrame metadata (docs/e2ee.md, clear bytes).
import { Context, SendKey, SFrameError } from "./sframe.js";

/** Leading bytes left in clear: VP8 10 on keyframes / 3 on delta, Opus 1, VP9/AV1 0. */
export function clearLength(codec, frame) {
  if (codec === "vp8") {
    if (!frame.length) throw new SFrameError("frame", "empty VP8 frame");
    return frame[0] & 0x01 ? 3 : 10;
  }
  if (codec === "opus") return 1;
  if (codec === "vp9" || codec === "av1") return 0;
  throw new SFrameError("frame", `${codec} frames are not supported with end-to-end encryption`);
}

export async function encryptFrame(sendKey, codec, frame) {
  const n = clearLength(codec, frame);
  if (frame.length < n) throw new SFrameError("frame", "frame shorter than its header");
  const clear = frame.subarray(0, n);
  const sealed = await sendKey.protect(frame.subarray(n), clear);
  const out = new Uint8Array(n + sealed.length);
  out.set(clear, 0);
  out.set(sealed, n);
  return out;
}

export async function decryptFrame(context, codec, data) {
  const n = clearLength(codec, data);
  if (data.length <= n) throw new SFrameError("frame", "encrypted frame ends inside its clear prefix");
  const clear = data.subarray(0, n);
  const { plaintext } = await context.unprotect(data.subarray(n), clear);
  const out = new Uint8Array(n + plaintext.length);
  out.set(clear, 0);
  out.set(plaintext, n);
  return out;
}

export { Context, SendKey };
