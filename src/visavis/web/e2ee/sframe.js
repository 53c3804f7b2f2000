// SFrame (RFC 9605) on WebCrypto: header codec, the five cipher suites, key derivation,
// replay window. The same design as the Python twin (visavis/protocol/sframe), checked
// against the same RFC Appendix C vectors (tests/e2ee/test_sframe_chromium.py).
// KID and CTR are BigInt (64-bit values). Works in a page and in a worker.

const subtle = globalThis.crypto.subtle;
const enc = new TextEncoder();

export class SFrameError extends Error {
  constructor(reason, message) {
    super(message);
    this.reason = reason; // counter name: truncated, unknown_kid, auth, replay, header, frame
  }
}

export const SUITES = {
  1: { name: "AES_128_CTR_HMAC_SHA256_80", hash: "SHA-256", nk: 48, nn: 12, nt: 10, nka: 16 },
  2: { name: "AES_128_CTR_HMAC_SHA256_64", hash: "SHA-256", nk: 48, nn: 12, nt: 8, nka: 16 },
  3: { name: "AES_128_CTR_HMAC_SHA256_32", hash: "SHA-256", nk: 48, nn: 12, nt: 4, nka: 16 },
  4: { name: "AES_128_GCM_SHA256_128", hash: "SHA-256", nk: 16, nn: 12, nt: 16, nka: 0 },
  5: { name: "AES_256_GCM_SHA512_128", hash: "SHA-512", nk: 32, nn: 12, nt: 16, nka: 0 },
};
export const DEFAULT_SUITE = 4;
const MAX = (1n << 64n) - 1n;

/** Byte helpers shared by the E2EE modules (identity.js and keys.js import them). */
export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

export function beBytes(value, size) {
  const out = new Uint8Array(size);
  let v = BigInt(value);
  for (let i = size - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

export function beValue(bytes) {
  let v = 0n;
  for (const b of bytes) v = (v << 8n) | BigInt(b);
  return v;
}

function field(value) {
  if (value < 0n || value > MAX) throw new SFrameError("header", `value ${value} out of range`);
  if (value < 8n) return [Number(value), new Uint8Array(0)];
  let size = 0;
  for (let v = value; v > 0n; v >>= 8n) size++;
  return [0x8 | (size - 1), beBytes(value, size)];
}

/** The minimal SFrame header for kid and ctr (RFC 9605 s4.3). */
export function encodeHeader(kid, ctr) {
  const [k, kidBytes] = field(BigInt(kid));
  const [c, ctrBytes] = field(BigInt(ctr));
  return concat(Uint8Array.of((k << 4) | c), kidBytes, ctrBytes);
}

/** {kid, ctr, length} of the header at the start of data. */
export function decodeHeader(data) {
  if (data.length < 1) throw new SFrameError("truncated", "empty SFrame ciphertext");
  const config = data[0];
  let pos = 1;
  const values = [];
  for (const nibble of [config >> 4, config & 0x0f]) {
    if (nibble & 0x8) {
      const size = (nibble & 0x7) + 1;
      if (data.length < pos + size) throw new SFrameError("truncated", "header ends early");
      values.push(beValue(data.subarray(pos, pos + size)));
      pos += size;
    } else {
      values.push(BigInt(nibble));
    }
  }
  return { kid: values[0], ctr: values[1], length: pos };
}

async function hmacKey(hash, raw) {
  return subtle.importKey("raw", raw, { name: "HMAC", hash }, false, ["sign"]);
}

/** sframe_secret = HKDF-Extract("", base_key): HMAC keyed with HashLen zero bytes. */
export async function deriveSecret(suite, baseKey) {
  const p = SUITES[suite];
  const zeros = new Uint8Array(p.hash === "SHA-512" ? 64 : 32);
  return new Uint8Array(await subtle.sign("HMAC", await hmacKey(p.hash, zeros), baseKey));
}

/** {key, salt} for kid from baseKey (RFC 9605 s4.4.2), via WebCrypto HKDF. */
export async function deriveKeySalt(suite, kid, baseKey) {
  const p = SUITES[suite];
  const tail = concat(beBytes(BigInt(kid), 8), beBytes(BigInt(suite), 2));
  const ikm = await subtle.importKey("raw", baseKey, "HKDF", false, ["deriveBits"]);
  const bits = async (label, n) =>
    new Uint8Array(
      await subtle.deriveBits(
        { name: "HKDF", hash: p.hash, salt: new Uint8Array(0), info: concat(enc.encode(label), tail) },
        ikm,
        n * 8,
      ),
    );
  return { key: await bits("SFrame 1.0 Secret key ", p.nk), salt: await bits("SFrame 1.0 Secret salt ", p.nn) };
}

/** The AEAD of one suite under one key (RFC 9605 s4.5). */
export class Aead {
  static async create(suite, key) {
    const p = SUITES[suite];
    if (!p) throw new SFrameError("header", `unknown cipher suite ${suite}`);
    if (key.length !== p.nk) throw new Error(`suite ${p.name} needs a ${p.nk}-byte key`);
    const aead = new Aead();
    aead.p = p;
    aead.key = key;
    if (p.nka) {
      aead.ctrKey = await subtle.importKey("raw", key.subarray(0, p.nka), "AES-CTR", false, ["encrypt"]);
      aead.macKey = await hmacKey(p.hash, key.subarray(p.nka));
    } else {
      aead.gcmKey = await subtle.importKey("raw", key, "AES-GCM", false, ["encrypt", "decrypt"]);
    }
    return aead;
  }

  async seal(nonce, aad, plaintext) {
    if (this.gcmKey) {
      return new Uint8Array(
        await subtle.encrypt({ name: "AES-GCM", iv: nonce, additionalData: aad, tagLength: 128 }, this.gcmKey, plaintext),
      );
    }
    const ct = await this.ctr(nonce, plaintext);
    return concat(ct, await this.tag(nonce, aad, ct));
  }

  async open(nonce, aad, sealed) {
    const nt = this.p.nt;
    if (sealed.length < nt) throw new SFrameError("truncated", "ciphertext shorter than its tag");
    if (this.gcmKey) {
      try {
        return new Uint8Array(
          await subtle.decrypt({ name: "AES-GCM", iv: nonce, additionalData: aad, tagLength: 128 }, this.gcmKey, sealed),
        );
      } catch {
        throw new SFrameError("auth", "AES-GCM tag mismatch");
      }
    }
    const ct = sealed.subarray(0, sealed.length - nt);
    const expected = await this.tag(nonce, aad, ct);
    const got = sealed.subarray(sealed.length - nt);
    let diff = 0;
    for (let i = 0; i < nt; i++) diff |= expected[i] ^ got[i];
    if (diff) throw new SFrameError("auth", "HMAC tag mismatch");
    return this.ctr(nonce, ct);
  }

  async ctr(nonce, data) {
    const counter = concat(nonce, new Uint8Array(4));
    return new Uint8Array(await subtle.encrypt({ name: "AES-CTR", counter, length: 32 }, this.ctrKey, data));
  }

  async tag(nonce, aad, ct) {
    const lengths = concat(beBytes(BigInt(aad.length), 8), beBytes(BigInt(ct.length), 8), beBytes(BigInt(this.p.nt), 8));
    const mac = new Uint8Array(await subtle.sign("HMAC", this.macKey, concat(lengths, nonce, aad, ct)));
    return mac.subarray(0, this.p.nt);
  }
}

async function keyState(suite, kid, baseKey) {
  const { key, salt } = await deriveKeySalt(suite, kid, baseKey);
  return { aead: await Aead.create(suite, key), salt: beValue(salt), nn: SUITES[suite].nn };
}

function nonceOf(state, ctr) {
  return beBytes(state.salt ^ ctr, state.nn);
}

/** One sender's key under one KID; protect() = header || AEAD(plaintext). */
export class SendKey {
  static async create(kid, baseKey, suite = DEFAULT_SUITE, ctr = 0n) {
    const k = new SendKey();
    k.kid = BigInt(kid);
    k.ctr = BigInt(ctr);
    k.state = await keyState(suite, k.kid, baseKey);
    return k;
  }

  async protect(plaintext, metadata = new Uint8Array(0)) {
    const ctr = this.ctr;
    if (ctr > MAX) throw new SFrameError("counter_exhausted", "the frame counter is exhausted");
    this.ctr = ctr + 1n;
    const header = encodeHeader(this.kid, ctr);
    return concat(header, await this.state.aead.seal(nonceOf(this.state, ctr), concat(header, metadata), plaintext));
  }
}

/** Receive keys by KID, each with a sliding replay window. */
export class Context {
  constructor(suite = DEFAULT_SUITE, window = 1024) {
    this.suite = suite;
    this.window = BigInt(window);
    this.keys = new Map(); // kid (string) -> {state, highest, bits}
  }

  async addKey(kid, baseKey) {
    this.keys.set(String(kid), { state: await keyState(this.suite, BigInt(kid), baseKey), highest: -1n, bits: 0n });
  }

  removeKey(kid) {
    this.keys.delete(String(kid));
  }

  clear() {
    this.keys.clear();
  }

  async unprotect(data, metadata = new Uint8Array(0)) {
    const header = decodeHeader(data);
    const entry = this.keys.get(String(header.kid));
    if (!entry) throw new SFrameError("unknown_kid", `no key for KID ${header.kid}`);
    const ctr = header.ctr;
    if (ctr <= entry.highest) {
      const offset = entry.highest - ctr;
      if (offset >= this.window || (entry.bits >> offset) & 1n) throw new SFrameError("replay", `counter ${ctr} replayed`);
    }
    const raw = data.subarray(0, header.length);
    const plaintext = await entry.state.aead.open(nonceOf(entry.state, ctr), concat(raw, metadata), data.subarray(header.length));
    if (ctr > entry.highest) {
      const shift = ctr - entry.highest;
      entry.bits = ((entry.bits << shift) | 1n) & ((1n << this.window) - 1n);
      entry.highest = ctr;
    } else {
      entry.bits |= 1n << (entry.highest - ctr);
    }
    return { kid: header.kid, ctr, plaintext };
  }
}

// -- test vectors (the JSON published with RFC 9605) -----------------------------------
const hex = (s) => Uint8Array.from(s.match(/../g) || [], (b) => parseInt(b, 16));
const same = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);

/** Parse the vector JSON keeping 64-bit kid/ctr exact (JSON numbers are doubles). */
export function parseVectors(text) {
  return JSON.parse(text.replace(/"(kid|ctr)":\s*(\d+)/g, '"$1": "$2"'));
}

const CHECKS = {
  header(c) {
    const encoded = hex(c.encoded);
    if (!same(encodeHeader(BigInt(c.kid), BigInt(c.ctr)), encoded)) throw new Error("encode");
    const h = decodeHeader(encoded);
    if (h.kid !== BigInt(c.kid) || h.ctr !== BigInt(c.ctr) || h.length !== encoded.length) throw new Error("decode");
  },
  async aes_ctr_hmac(c) {
    const aead = await Aead.create(c.cipher_suite, hex(c.key));
    const [nonce, aad, ct, pt] = [hex(c.nonce), hex(c.aad), hex(c.ct), hex(c.pt)];
    if (!same(await aead.seal(nonce, aad, pt), ct)) throw new Error("seal");
    if (!same(await aead.open(nonce, aad, ct), pt)) throw new Error("open");
  },
  async sframe(c) {
    const [suite, kid, ctr, baseKey] = [c.cipher_suite, BigInt(c.kid), BigInt(c.ctr), hex(c.base_key)];
    if (!same(await deriveSecret(suite, baseKey), hex(c.sframe_secret))) throw new Error("secret");
    const { key, salt } = await deriveKeySalt(suite, kid, baseKey);
    if (!same(key, hex(c.sframe_key)) || !same(salt, hex(c.sframe_salt))) throw new Error("key/salt");
    const [metadata, ct, pt] = [hex(c.metadata), hex(c.ct), hex(c.pt)];
    const sender = await SendKey.create(kid, baseKey, suite, ctr);
    if (!same(await sender.protect(pt, metadata), ct)) throw new Error("protect");
    const receiver = new Context(suite);
    await receiver.addKey(kid, baseKey);
    if (!same((await receiver.unprotect(ct, metadata)).plaintext, pt)) throw new Error("unprotect");
  },
};

/** {passed, failures} for every case of the parsed vector file. */
export async function checkVectors(vectors) {
  let passed = 0;
  const failures = [];
  for (const [section, cases] of Object.entries(vectors)) {
    const check = CHECKS[section];
    for (const [i, c] of cases.entries()) {
      try {
        if (!check) throw new Error("unknown section");
        await check(c);
        passed++;
      } catch (e) {
        failures.push(`${section}[${i}]: ${e.message}`);
      }
    }
  }
  return { passed, failures };
}
