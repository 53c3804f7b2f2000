// Per-call key agreement and sender-key distribution: the browser twin of
// visavis/e2ee/keys.py + ratchet.py, byte for byte (tests/e2ee/test_keys_chromium.py
// opens Python's messages here and this module's in Python).
//
// On joining a call a device makes an ephemeral X25519 key pair and a random SFrame
// sender key and broadcasts an *announce* (its ephemeral public key and, in a 1:1 call,
// its DTLS fingerprint) signed with its identity key. A device that sees a new announce
// checks the signature against the sender's (pinned) identity key, ratchets its own
// sender key if others already hold it (the newcomer must not read earlier media),
// answers with its own announce and a *key* message: its sender key under AES-GCM with
// HKDF(X25519(eph_a, eph_b)), signed. When a device leaves, the others draw fresh keys.
// A bad announce signature or a wrong fingerprint is an alert: the call must stop.
//
// Sans-I/O like the Python one: inputs are start / receive / peerJoined / peerLeft /
// checkFingerprint / end; outputs are lists of {toDevice, payload}; the key changes go to
// `sink` (the FrameCrypto worker: setSendKey / addKey / removeKey).

import { b64, concat, unb64, verify } from "./identity.js";
import { beBytes, beValue } from "./sframe.js";

const subtle = globalThis.crypto.subtle;
const enc = new TextEncoder();

export const VERSION = 1;
export const MAX_PAYLOAD = 4096;
export const MAX_PENDING = 16;
export const MAX_SKIP = 16;
export const MAX_GENERATION = 0xff;
export const KEEP_OLD = 2;

const random = (n) => crypto.getRandomValues(new Uint8Array(n));

export { beBytes };

/** Unambiguous bytes to sign: "visavis e2ee v1" then each part length-prefixed. */
export function signedBytes(...parts) {
  const out = [enc.encode("visavis e2ee v1")];
  for (const part of parts) {
    const data = typeof part === "string" ? enc.encode(part) : part;
    out.push(beBytes(data.length, 4), data);
  }
  return concat(...out);
}

export async function hkdf(ikm, salt, info, length, hash = "SHA-256") {
  const key = await subtle.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  return new Uint8Array(await subtle.deriveBits({ name: "HKDF", hash, salt, info }, key, length * 8));
}

// -- sender keys (ratchet.py) ------------------------------------------------------------

/** A random base key under a random non-zero 32-bit prefix, generation 0. */
export function freshKey() {
  const prefix = beValue(random(4)) || 1n;
  return { kid: prefix << 8n, baseKey: random(32) };
}

/** The next generation: one-way, the old key cannot be computed from the new one. */
export async function ratchet(key) {
  if ((key.kid & 0xffn) >= BigInt(MAX_GENERATION)) throw new Error("generation exhausted: draw a fresh key instead");
  const info = concat(enc.encode("visavis sframe ratchet v1"), beBytes(key.kid, 8));
  return { kid: key.kid + 1n, baseKey: await hkdf(key.baseKey, new Uint8Array(0), info, 32) };
}

/** The key that seals application data (seal/open), distinct from the media key so the
 * two SFrame counters never share a nonce. */
export function dataKey(kid, baseKey) {
  return hkdf(baseKey, new Uint8Array(0), concat(enc.encode("visavis data v1"), beBytes(kid, 8)), 32);
}

/** This device's sending key and every remote sender's keys; changes go to `sink`. */
export class Keyring {
  constructor(sink) {
    this.sink = sink;
    this.current = freshKey();
    this.remote = new Map(); // device → keys, newest last
    this.owner = new Map(); // prefix (string) → device
    this.ready = sink.setSendKey(this.current.kid, this.current.baseKey);
  }

  async advance() {
    if ((this.current.kid & 0xffn) >= BigInt(MAX_GENERATION)) return this.rotate();
    return this._use(await ratchet(this.current));
  }

  rotate() {
    return this._use(freshKey());
  }

  async _use(key) {
    this.current = key;
    await this.sink.setSendKey(key.kid, key.baseKey);
    return key;
  }

  async install(device, key) {
    const keys = [...(this.remote.get(device) ?? []).filter((k) => k.kid !== key.kid), key];
    const keep = keys.slice(-KEEP_OLD);
    for (const old of keys.slice(0, -KEEP_OLD)) {
      await this.sink.removeKey(old.kid);
      if (!keep.some((k) => k.kid >> 8n === old.kid >> 8n)) this.owner.delete(String(old.kid >> 8n));
    }
    this.remote.set(device, keep);
    this.owner.set(String(key.kid >> 8n), device);
    await this.sink.addKey(key.kid, key.baseKey, device);
  }

  async forget(device) {
    for (const key of this.remote.get(device) ?? []) {
      await this.sink.removeKey(key.kid);
      this.owner.delete(String(key.kid >> 8n));
    }
    this.remote.delete(device);
  }

  senderOf(kid) {
    return this.owner.get(String(BigInt(kid) >> 8n)) ?? null;
  }

  async erase() {
    this.remote.clear();
    this.owner.clear();
    this.current = { kid: 0n, baseKey: new Uint8Array(0) };
    await this.sink.erase?.();
  }
}

// -- the call's key state machine (keys.py) ----------------------------------------------

class Refused extends Error {}

export class CallKeys {
  /**
   * @param {string} callId
   * @param {string} deviceId
   * @param {DeviceIdentity} identity
   * @param {(device: string) => Uint8Array|null} directory  pinned identity keys
   * @param {object} sink  setSendKey / addKey / removeKey (FrameCrypto)
   * @param {string|null} fingerprint  our DTLS fingerprint in a 1:1 call
   */
  static async create(callId, deviceId, identity, directory, sink, fingerprint = null) {
    const keys = new CallKeys();
    Object.assign(keys, { callId, deviceId, identity, directory, fingerprint });
    keys.keyring = new Keyring(sink);
    keys.eph = await subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
    keys.ephPublic = new Uint8Array(await subtle.exportKey("raw", keys.eph.publicKey));
    keys.members = new Set();
    keys.peers = new Map(); // device → {eph, fingerprint, hasOurKey}
    keys.pending = [];
    keys.alerts = [];
    keys.refused = {};
    keys.ended = false;
    keys.queue = Promise.resolve();
    await keys.keyring.ready;
    return keys;
  }

  /** Inputs run one at a time, in order (each awaits WebCrypto). */
  _serial(fn) {
    const next = this.queue.then(fn);
    this.queue = next.catch(() => {});
    return next;
  }

  _refuse(reason) {
    this.refused[reason] = (this.refused[reason] ?? 0) + 1;
  }

  start() {
    return this._serial(async () => [{ toDevice: null, payload: await this._announce(null) }]);
  }

  peerJoined(device) {
    return this._serial(async () => {
      this.members.add(device);
      const pending = this.pending;
      this.pending = [];
      const out = [];
      for (const [sender, payload] of pending) out.push(...(await this._receive(sender, payload)));
      return out;
    });
  }

  peerLeft(device) {
    return this._serial(async () => {
      this.members.delete(device);
      if (!this.peers.delete(device)) return [];
      await this.keyring.forget(device);
      await this.keyring.rotate();
      const out = [];
      for (const peer of this.peers.keys()) out.push(await this._keyFor(peer));
      return out;
    });
  }

  receive(sender, payload) {
    return this._serial(() => this._receive(sender, payload));
  }

  async _receive(sender, payload) {
    if (this.ended) return [];
    if (!this.members.has(sender)) {
      if (this.pending.length < MAX_PENDING) this.pending.push([sender, payload]);
      else this._refuse("not_in_call");
      return [];
    }
    try {
      const message = typeof payload === "string" && payload.length <= MAX_PAYLOAD ? JSON.parse(payload) : null;
      if (!message || typeof message !== "object" || message.v !== VERSION) throw new Refused("malformed");
      if (message.call !== this.callId) return this._refuse("other_call"), [];
      if (message.from !== sender || ![null, undefined, this.deviceId].includes(message.to)) return this._refuse("misaddressed"), [];
      if (message.kind === "announce") return await this._onAnnounce(sender, message);
      if (message.kind === "key") {
        await this._onKey(sender, message);
        return [];
      }
      if (message.kind === "alert") {
        await this._onAlert(sender, message);
        return [];
      }
      throw new Refused("malformed");
    } catch {
      this._refuse("malformed");
      return [];
    }
  }

  /** 1:1 calls: the DTLS fingerprint in `device`'s SDP must be the one it signed. */
  checkFingerprint(device, fingerprint) {
    const peer = this.peers.get(device);
    const signed = (peer?.fingerprint ?? "").toLowerCase();
    if (signed !== "" && signed === (fingerprint ?? "").toLowerCase()) return true;
    this._alert(device, "fingerprint_mismatch", "the SDP fingerprint is not the signed one");
    return false;
  }

  end() {
    return this._serial(async () => {
      this.ended = true;
      await this.keyring.erase();
      this.peers.clear();
      this.eph = null;
    });
  }

  get stopped() {
    return this.alerts.length > 0;
  }

  // -- messages ------------------------------------------------------------------------
  async _announce(to) {
    const fp = this.fingerprint ?? "";
    const sig = await this.identity.sign(signedBytes("announce", this.callId, this.deviceId, to ?? "", this.ephPublic, fp));
    // ik: the identity public key, for peers that cannot look it up (guests from call
    // links and their hosts: such keys are shown as unverified)
    const body = { v: VERSION, kind: "announce", call: this.callId, from: this.deviceId, to, eph: b64(this.ephPublic), ik: this.identity.publicB64, sig: b64(sig) };
    if (this.fingerprint) body.fp = this.fingerprint;
    return JSON.stringify(body);
  }

  async _onAnnounce(sender, message) {
    const identity = this.directory(sender);
    const eph = unb64(message.eph);
    const fp = message.fp || "";
    const to = message.to || "";
    const signed = signedBytes("announce", this.callId, sender, to, eph, fp);
    if (!identity || !(await verify(identity, unb64(message.sig), signed))) {
      this._refuse("bad_signature");
      this._alert(sender, "announce_signature", "its call key is not signed by its device");
      return [];
    }
    if (eph.length !== 32) throw new Refused("bad ephemeral key");
    const known = this.peers.get(sender);
    if (known && b64(known.eph) === b64(eph)) return []; // a repeat
    if ([...this.peers.values()].some((p) => p.hasOurKey)) await this.keyring.advance();
    this.peers.set(sender, { eph, fingerprint: fp || null, hasOurKey: false });
    const out = to ? [] : [{ toDevice: sender, payload: await this._announce(sender) }];
    return [...out, await this._keyFor(sender)];
  }

  async _pairKey(from, to, peerEph) {
    const pub = await subtle.importKey("raw", peerEph, { name: "X25519" }, false, []);
    const shared = new Uint8Array(await subtle.deriveBits({ name: "X25519", public: pub }, this.eph.privateKey, 256));
    const salt = new Uint8Array(await subtle.digest("SHA-256", enc.encode(this.callId)));
    const raw = await hkdf(shared, salt, signedBytes("wrap", from, to), 32);
    return subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
  }

  async _keyFor(device) {
    const peer = this.peers.get(device);
    const key = this.keyring.current;
    const nonce = random(12);
    const aad = signedBytes("key", this.callId, this.deviceId, device);
    const wrap = await this._pairKey(this.deviceId, device, peer.eph);
    const plain = concat(beBytes(key.kid, 8), key.baseKey);
    const ct = new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv: nonce, additionalData: aad }, wrap, plain));
    const sig = await this.identity.sign(signedBytes("key", this.callId, this.deviceId, device, nonce, ct));
    peer.hasOurKey = true;
    const body = { v: VERSION, kind: "key", call: this.callId, from: this.deviceId, to: device, nonce: b64(nonce), ct: b64(ct), sig: b64(sig) };
    return { toDevice: device, payload: JSON.stringify(body) };
  }

  async _onKey(sender, message) {
    const peer = this.peers.get(sender);
    const identity = this.directory(sender);
    if (!peer || !identity) return this._refuse("no_announce");
    const nonce = unb64(message.nonce);
    const ct = unb64(message.ct);
    if (!(await verify(identity, unb64(message.sig), signedBytes("key", this.callId, sender, this.deviceId, nonce, ct)))) {
      return this._refuse("bad_signature");
    }
    const aad = signedBytes("key", this.callId, sender, this.deviceId);
    let plain;
    try {
      const wrap = await this._pairKey(sender, this.deviceId, peer.eph);
      plain = new Uint8Array(await subtle.decrypt({ name: "AES-GCM", iv: nonce, additionalData: aad }, wrap, ct));
    } catch {
      return this._refuse("undecryptable");
    }
    if (plain.length !== 40) throw new Refused("bad key length");
    await this.keyring.install(sender, { kid: beValue(plain.subarray(0, 8)), baseKey: plain.slice(8) });
  }

  /** Tell the device `alert` is about that this one stops the call, and why (signed:
   * signaling can drop it, which only ends the call as a leave would, not forge it). */
  async alertMessage(alert) {
    const { device: to, reason } = alert;
    const sig = await this.identity.sign(signedBytes("alert", this.callId, this.deviceId, to, reason));
    const body = { v: VERSION, kind: "alert", call: this.callId, from: this.deviceId, to, reason, sig: b64(sig) };
    return { toDevice: to, payload: JSON.stringify(body) };
  }

  async _onAlert(sender, message) {
    const identity = this.directory(sender);
    const reason = String(message.reason).slice(0, 64);
    if (!identity || !(await verify(identity, unb64(message.sig), signedBytes("alert", this.callId, sender, this.deviceId, reason)))) {
      return this._refuse("bad_signature");
    }
    this._alert(sender, "peer_alert", reason);
  }

  _alert(device, reason, detail) {
    this.alerts.push({ device, reason, detail });
    this.onAlert?.({ device, reason, detail });
  }
}
