// The browser's key schedule (web/e2ee/keys.js) on Node's WebCrypto: who gets which
// sender key when people join and leave, refusals and alerts. Interop with the Python
// bytes is tested in Chromium (tests/e2ee/test_keys_chromium.py).
import { test } from "node:test";
import assert from "node:assert/strict";
import { CallKeys } from "../../../src/visavis/web/e2ee/keys.js";
import { DeviceIdentity, verificationCode } from "../../../src/visavis/web/e2ee/identity.js";

const CALL = "call-js";

function sink() {
  return {
    send: null,
    added: new Map(), // kid (string) → key
    erased: false,
    async setSendKey(kid, key) {
      this.send = { kid, key };
    },
    async addKey(kid, key) {
      this.added.set(String(kid), key);
    },
    async removeKey(kid) {
      this.added.delete(String(kid));
    },
    async erase() {
      this.erased = true;
      this.added.clear();
    },
  };
}

/** Devices of one call wired by a fake signaling that delivers every message. */
class Room {
  constructor() {
    this.devices = new Map(); // name → {keys, sink, identity}
    this.directory = new Map();
    this.tamper = null;
  }
  async join(name) {
    const identity = await DeviceIdentity.generate();
    this.directory.set(name, identity.public);
    const s = sink();
    const keys = await CallKeys.create(CALL, name, identity, (d) => this.directory.get(d) ?? null, s);
    for (const [other, d] of this.devices) {
      await d.keys.peerJoined(name);
      keys.members.add(other);
    }
    this.devices.set(name, { keys, sink: s, identity });
    await this.deliver(name, await keys.start());
    return this.devices.get(name);
  }
  async leave(name) {
    const gone = this.devices.get(name);
    this.devices.delete(name);
    for (const [other, d] of this.devices) await this.deliver(other, await d.keys.peerLeft(name));
    return gone;
  }
  async deliver(from, outgoing) {
    const queue = outgoing.map((o) => [from, o]);
    while (queue.length) {
      const [src, o] = queue.shift();
      const targets = o.toDevice ? [o.toDevice] : [...this.devices.keys()];
      for (const target of targets) {
        if (target === src || !this.devices.has(target)) continue;
        const payload = this.tamper ? this.tamper(src, target, o.payload) : o.payload;
        for (const out of await this.devices.get(target).keys.receive(src, payload)) queue.push([target, out]);
      }
    }
  }
}

const holds = (receiver, sender) => receiver.sink.added.has(String(sender.sink.send.kid));
// holds the sender's key or an earlier generation of it (the worker ratchets forward)
const follows = (receiver, sender) =>
  [...receiver.sink.added.keys()].some((k) => BigInt(k) >> 8n === sender.sink.send.kid >> 8n && BigInt(k) <= sender.sink.send.kid);

test("everyone holds everyone's current sender key; one verification code", async () => {
  const room = new Room();
  const [a, b, c] = [await room.join("a"), await room.join("b"), await room.join("c")];
  for (const x of [a, b, c]) for (const y of [a, b, c]) if (x !== y) assert.ok(follows(x, y));
  const keys = Object.fromEntries([...room.directory]);
  const codes = new Set(await Promise.all([a, b, c].map(() => verificationCode(CALL, keys))));
  assert.equal(codes.size, 1);
  for (const x of [a, b, c]) assert.deepEqual(x.keys.refused, {});
});

test("a joiner gets ratcheted keys only; a leaver never gets the fresh ones", async () => {
  const room = new Room();
  const a = await room.join("a");
  const b = await room.join("b");
  const before = a.sink.send.kid;
  const c = await room.join("c");
  assert.equal(a.sink.send.kid, before + 1n); // same prefix, next generation
  assert.ok(!c.sink.added.has(String(before))); // c cannot read what a sent before
  assert.ok(holds(c, a) && !holds(b, a) && follows(b, a)); // b ratchets by itself (worker)
  const gone = await room.leave("c");
  const fresh = a.sink.send.kid;
  assert.notEqual(fresh >> 8n, before >> 8n); // a fresh random key, not a ratchet
  assert.ok(holds(b, a));
  assert.ok(!gone.sink.added.has(String(fresh)));
});

test("a substituted call key is an alert; forged key messages are refused", async () => {
  const room = new Room();
  const mallory = await CallKeys.create(CALL, "x", await DeviceIdentity.generate(), () => null, sink());
  room.tamper = (src, dst, payload) => {
    const m = JSON.parse(payload);
    if (m.kind === "announce" && src === "b") m.eph = Buffer.from(mallory.ephPublic).toString("base64url");
    if (m.kind === "key" && src === "b") m.sig = Buffer.alloc(64).toString("base64url");
    return JSON.stringify(m);
  };
  const a = await room.join("a");
  const b = await room.join("b");
  assert.deepEqual(a.keys.alerts.map((x) => x.reason), ["announce_signature"]);
  assert.ok(a.keys.stopped && !holds(a, b));
  // the alert to b is signed; b obeys it, a forged one is refused
  const told = await a.keys.alertMessage(a.keys.alerts[0]);
  const forged = JSON.stringify({ ...JSON.parse(told.payload), reason: "made_up" });
  await b.keys.receive("a", forged);
  assert.equal(b.keys.refused.bad_signature, 1);
  await b.keys.receive("a", told.payload);
  assert.deepEqual(b.keys.alerts.map((x) => [x.reason, x.detail]), [["peer_alert", "announce_signature"]]);
  await b.keys.receive("a", "{not json");
  await b.keys.receive("a", JSON.stringify({ ...JSON.parse(told.payload), call: "other" }));
  assert.equal(b.keys.refused.malformed, 1);
  assert.equal(b.keys.refused.other_call, 1);
});

test("the end of the call erases every key", async () => {
  const room = new Room();
  const a = await room.join("a");
  await room.join("b");
  await a.keys.end();
  assert.ok(a.sink.erased && a.sink.added.size === 0 && a.keys.peers.size === 0);
  assert.deepEqual(await a.keys.receive("b", "{}"), []);
});
