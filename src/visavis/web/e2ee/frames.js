// SFrame applied to encoded frames, as visavis/e2ee/frames.py (same bytes both ways):
// the codec's routing data stays clear and is authenticated as SFrame metadata
// (docs/e2ee.md, clear bytes per codec).
//  - clear prefix: VP8 10 bytes on keyframes / 3 on delta, Opus 1, VP9 0;
//  - units: AV1 OBUs and H.264 NAL units keep their headers (and H.264 non-slice units,
//    and a slice's first 2 header bytes) clear; payloads are one SFrame plaintext whose
//    output (header ‖ ciphertext ‖ tag) is cut back into the payload slots.
import { Context, SendKey, SFrameError, SUITES, concat, decodeHeader } from "./sframe.js";

const frameError = (message) => new SFrameError("frame", message);

/** Leading bytes left in clear for the prefix codecs (VP8, Opus, VP9). */
export function clearLength(codec, frame) {
  if (codec === "vp8") {
    if (!frame.length) throw frameError("empty VP8 frame");
    return frame[0] & 0x01 ? 3 : 10;
  }
  if (codec === "opus") return 1;
  if (codec === "vp9") return 0;
  throw frameError(`${codec} frames have no clear prefix (their units stay clear)`);
}

// -- units: seal and open -------------------------------------------------------------
function metadata(units, lengths) {
  const parts = [];
  units.forEach(([clear], i) => {
    const n = lengths[i];
    parts.push(Uint8Array.of(n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255, clear.length >> 8, clear.length & 255), clear);
  });
  return concat(...parts);
}

function slotsOf(units) {
  const slots = [];
  units.forEach(([, payload], i) => payload.length && slots.push(i));
  return slots;
}

async function seal(sendKey, units) {
  const slots = slotsOf(units);
  if (!slots.length) throw frameError("frame has no payload to encrypt");
  const plaintext = concat(...units.map(([, p]) => p));
  const sealed = await sendKey.protect(plaintext, metadata(units, units.map(([, p]) => p.length)));
  const header = decodeHeader(sealed).length;
  const tag = sealed.length - header - plaintext.length;
  let pos = 0;
  return units.map(([clear, payload], i) => {
    if (!payload.length) return [clear, payload];
    const n = payload.length + (i === slots[0] ? header : 0) + (i === slots[slots.length - 1] ? tag : 0);
    const slot = sealed.subarray(pos, pos + n);
    pos += n;
    return [clear, slot];
  });
}

async function open(context, units) {
  const slots = slotsOf(units);
  if (!slots.length) throw frameError("encrypted frame has no payload");
  const sealed = concat(...units.map(([, p]) => p));
  const header = decodeHeader(sealed).length;
  const tag = SUITES[context.suite].nt;
  const lengths = units.map(([, p], i) => p.length - (i === slots[0] ? header : 0) - (i === slots[slots.length - 1] ? tag : 0));
  if (lengths.some((n) => n < 0)) throw frameError("encrypted frame's payloads are shorter than SFrame's header and tag");
  const result = await context.unprotect(sealed, metadata(units, lengths));
  let pos = 0;
  const plain = units.map(([clear, payload], i) => {
    if (!payload.length) return [clear, payload];
    const part = result.plaintext.subarray(pos, pos + lengths[i]);
    pos += lengths[i];
    return [clear, part];
  });
  return { result, plain };
}

// -- AV1: OBUs ------------------------------------------------------------------------------
const AV1_DROPPED = new Set([2, 8, 15]); // temporal delimiter, tile list, padding

function leb128(data, pos) {
  let value = 0;
  for (let i = 0; i < 8 && pos < data.length; i++) {
    const byte = data[pos++];
    value += (byte & 0x7f) * 2 ** (7 * i);
    if (!(byte & 0x80)) return [value, pos];
  }
  throw frameError("AV1 OBU size field is truncated");
}

function leb128Bytes(value) {
  const out = [];
  do {
    let byte = value & 0x7f;
    value = Math.floor(value / 128);
    if (value) byte |= 0x80;
    out.push(byte);
  } while (value);
  return Uint8Array.from(out);
}

export function av1Units(frame) {
  const out = [];
  let pos = 0;
  while (pos < frame.length) {
    const first = frame[pos];
    if (first & 0x80) throw frameError("AV1 OBU header has its forbidden bit set");
    const size = first & 0x04 ? 2 : 1;
    if (pos + size > frame.length) throw frameError("AV1 OBU header is truncated");
    const header = concat(Uint8Array.of(first & ~0x02), frame.subarray(pos + 1, pos + size));
    pos += size;
    let length = frame.length - pos;
    if (first & 0x02) [length, pos] = leb128(frame, pos);
    if (pos + length > frame.length) throw frameError("AV1 OBU overruns the frame");
    if (!AV1_DROPPED.has((first >> 3) & 0x0f)) out.push([header, frame.subarray(pos, pos + length)]);
    pos += length;
  }
  if (!out.length) throw frameError("AV1 frame has no OBU");
  return out;
}

export function av1Join(units) {
  return concat(...units.flatMap(([clear, payload]) => [Uint8Array.of(clear[0] | 0x02), clear.subarray(1), leb128Bytes(payload.length), payload]));
}

// -- H.264: Annex B NAL units ---------------------------------------------------------------
const SLICE_CLEAR = 3; // NAL header + first_mb_in_slice, slice_type, pic_parameter_set_id

function findStart(data, from) {
  for (let i = from; i + 2 < data.length; i++) {
    if (data[i + 2] > 1) i += 2; // skip: no start code can end here
    else if (data[i] === 0 && data[i + 1] === 0 && data[i + 2] === 1) return i;
  }
  return -1;
}

function nalUnits(frame) {
  const first = findStart(frame, 0);
  if (first < 0 || frame.subarray(0, first).some((b) => b !== 0)) throw frameError("H.264 frame is not Annex B (no start code first)");
  const out = [];
  let pos = first + 3;
  for (;;) {
    const next = findStart(frame, pos);
    let end = next < 0 ? frame.length : next;
    if (next >= 0) while (end > pos && frame[end - 1] === 0) end--;
    if (end > pos) out.push(frame.subarray(pos, end));
    if (next < 0) return out;
    pos = next + 3;
  }
}

function escape(data) {
  const out = [];
  let zeros = 0;
  for (const b of data) {
    if (zeros >= 2 && b <= 3) {
      out.push(3);
      zeros = 0;
    }
    out.push(b);
    zeros = b === 0 ? zeros + 1 : 0;
  }
  out.push(0x80);
  return Uint8Array.from(out);
}

function unescape(data) {
  if (!data.length || data[data.length - 1] !== 0x80) throw frameError("H.264 encrypted slice does not end with its 0x80 marker");
  const out = [];
  let zeros = 0;
  for (let i = 0; i < data.length - 1; i++) {
    const b = data[i];
    if (zeros >= 2 && b === 3) {
      zeros = 0;
      continue;
    }
    out.push(b);
    zeros = b === 0 ? zeros + 1 : 0;
  }
  return Uint8Array.from(out);
}

export function h264Units(frame, encrypted = false) {
  return nalUnits(frame).map((nal) => {
    const type = nal[0] & 0x1f;
    if (type >= 1 && type <= 5 && nal.length > SLICE_CLEAR) {
      const payload = nal.subarray(SLICE_CLEAR);
      return [nal.subarray(0, SLICE_CLEAR), encrypted ? unescape(payload) : payload];
    }
    return [nal, new Uint8Array(0)];
  });
}

export function h264Join(units, encrypted = false) {
  const start = Uint8Array.of(0, 0, 0, 1);
  return concat(...units.flatMap(([clear, payload]) => [start, clear, encrypted && payload.length ? escape(payload) : payload]));
}

const UNITS = { av1: [av1Units, av1Join], h264: [h264Units, h264Join] };

// -- the frame transforms -------------------------------------------------------------------
export async function encryptFrame(sendKey, codec, frame) {
  const layout = UNITS[codec];
  if (layout) return layout[1](await seal(sendKey, layout[0](frame, false)), true);
  const n = clearLength(codec, frame);
  if (frame.length < n) throw frameError("frame shorter than its header");
  const clear = frame.subarray(0, n);
  return concat(clear, await sendKey.protect(frame.subarray(n), clear));
}

export async function decryptFrame(context, codec, data) {
  const layout = UNITS[codec];
  if (layout) {
    const { plain } = await open(context, layout[0](data, true));
    return layout[1](plain, false);
  }
  const n = clearLength(codec, data);
  if (data.length <= n) throw frameError("encrypted frame ends inside its clear prefix");
  const clear = data.subarray(0, n);
  const { plaintext } = await context.unprotect(data.subarray(n), clear);
  return concat(clear, plaintext);
}

/** The SFrame KID of an encrypted frame (to follow a sender's ratchet). */
export function frameKid(codec, data) {
  const layout = UNITS[codec];
  if (!layout) return decodeHeader(data.subarray(clearLength(codec, data))).kid;
  return decodeHeader(concat(...layout[0](data, true).map(([, p]) => p))).kid;
}

export { Context, SendKey };
