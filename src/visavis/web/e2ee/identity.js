// Device identity keys, trust-on-first-use pins and the per-call verification code: the
// browser twin of visavis/e2ee/identity.py (same bytes, same code).
//
// The identity is an Ed25519 key pair made by WebCrypto with a NON-extractable private
// key, kept in IndexedDB (a CryptoKey survives structured cloning, its bytes never reach
// script). Signaling gets the public half once (PUT /api/devices/current/identity).
// Pins live in localStorage: (handle/device) → public key; a different key later is
// "changed", shown before the call connects.

import { concat } from "./sframe.js";

const subtle = globalThis.crypto.subtle;
const enc = new TextEncoder();

export function b64(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function unb64(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text)) throw new TypeError("not base64url");
  const s = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4));
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

export { concat };

export function equalBytes(a, b) {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** This device's long-term Ed25519 key pair; `public` is the raw 32-byte public key. */
export class DeviceIdentity {
  constructor(privateKey, publicRaw) {
    this.privateKey = privateKey;
    this.public = publicRaw;
  }

  static async generate() {
    const pair = await subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
    return new DeviceIdentity(pair.privateKey, new Uint8Array(await subtle.exportKey("raw", pair.publicKey)));
  }

  /** The identity stored under `name` in IndexedDB, or a new one stored there. */
  static async loadOrCreate(name, dbName = "visavis-e2ee") {
    const db = await openDb(dbName);
    try {
      const stored = await idb(db.transaction("identity").objectStore("identity").get(name));
      if (stored) return new DeviceIdentity(stored.privateKey, new Uint8Array(stored.public));
      const identity = await DeviceIdentity.generate();
      const store = db.transaction("identity", "readwrite").objectStore("identity");
      await idb(store.put({ privateKey: identity.privateKey, public: identity.public }, name));
      return identity;
    } finally {
      db.close();
    }
  }

  get publicB64() {
    return b64(this.public);
  }

  async sign(data) {
    return new Uint8Array(await subtle.sign({ name: "Ed25519" }, this.privateKey, data));
  }
}

function openDb(name) {
  const request = indexedDB.open(name, 1);
  request.onupgradeneeded = () => request.result.createObjectStore("identity");
  return idb(request);
}

function idb(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/** True if `signature` is `publicRaw`'s Ed25519 signature of `data`. */
export async function verify(publicRaw, signature, data) {
  try {
    const key = await subtle.importKey("raw", publicRaw, { name: "Ed25519" }, false, ["verify"]);
    return await subtle.verify({ name: "Ed25519" }, key, signature, data);
  } catch {
    return false;
  }
}

export const PIN_NEW = "new";
export const PIN_SAME = "same";
export const PIN_CHANGED = "changed";

/** Trust-on-first-use pins: "handle/device" → public key (base64url), in `storage`. */
export class Pins {
  constructor(storage = null, key = "visavis.pins") {
    this.storage = storage;
    this.key = key;
    this.pins = {};
    try {
      this.pins = JSON.parse(storage?.getItem(key) ?? "{}") ?? {};
    } catch {
      this.pins = {};
    }
  }

  /** Compare with the pin; pin on first sight. A change is NOT re-pinned here. */
  check(handle, deviceId, publicRaw) {
    const name = `${handle}/${deviceId}`;
    const pinned = this.pins[name];
    if (pinned === undefined) {
      this.pins[name] = b64(publicRaw);
      this._save();
      return PIN_NEW;
    }
    return pinned === b64(publicRaw) ? PIN_SAME : PIN_CHANGED;
  }

  /** The user accepted a changed key: pin the new one. */
  accept(handle, deviceId, publicRaw) {
    this.pins[`${handle}/${deviceId}`] = b64(publicRaw);
    this._save();
  }

  _save() {
    this.storage?.setItem(this.key, JSON.stringify(this.pins));
  }
}

/**
 * Groups of five digits from the call id and every device's identity key (`keys`:
 * device id → raw public key, this device's included), as identity.py computes them.
 */
export async function verificationCode(callId, keys, groups = 4) {
  const parts = [enc.encode("visavis verification v1\0"), enc.encode(callId)];
  for (const deviceId of Object.keys(keys).sort(byCodePoint)) {
    const id = enc.encode(deviceId);
    parts.push(Uint8Array.of(id.length >> 8, id.length & 0xff), id, keys[deviceId]);
  }
  const digest = new Uint8Array(await subtle.digest("SHA-256", concat(...parts)));
  let value = 0n;
  for (const b of digest.subarray(0, 16)) value = (value << 8n) | BigInt(b);
  const out = [];
  for (let i = 0; i < groups; i++) {
    out.push(String(value % 100000n).padStart(5, "0"));
    value /= 100000n;
  }
  return out.join(" ");
}

/** Python's sorted() order on str (code points), not localeCompare. */
function byCodePoint(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}
