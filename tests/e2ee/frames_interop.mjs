// Run by tests/e2ee/test_frames_units.py: the browser's frames.js on Node's WebCrypto.
// stdin: {key, kid, encrypt: [{codec, frame}], decrypt: [{codec, data}], join: [[clear, payload]]}
// (bytes as hex); stdout: {encrypted: [hex], decrypted: [hex | "!reason"], joined: [hex]}.
import { readFileSync } from "node:fs";
import { Context, SendKey, decryptFrame, encryptFrame, frameKid, h264Join, h264Units } from "../../src/visavis/web/e2ee/frames.js";

const hex = (s) => Uint8Array.from(s.match(/../g) || [], (b) => parseInt(b, 16));
const toHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const input = JSON.parse(readFileSync(0, "utf8"));
const key = hex(input.key);
const sender = await SendKey.create(BigInt(input.kid), key);
const encrypted = [];
for (const { codec, frame } of input.encrypt) encrypted.push(toHex(await encryptFrame(sender, codec, hex(frame))));
const context = new Context();
await context.addKey(BigInt(input.kid), key);
const decrypted = [];
const kids = [];
for (const { codec, data } of input.decrypt) {
  try {
    kids.push(String(frameKid(codec, hex(data))));
    decrypted.push(toHex(await decryptFrame(context, codec, hex(data))));
  } catch (e) {
    decrypted.push(`!${e.reason ?? e.message}`);
  }
}
const joined = input.join.map(([c, p]) => toHex(h264Join([[hex(c), hex(p)]], true)));
const split = joined.map((j) => h264Units(hex(j), true).map(([c, p]) => [toHex(c), toHex(p)]));
process.stdout.write(JSON.stringify({ encrypted, decrypted, kids, joined, split }));
