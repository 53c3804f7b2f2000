// End-to-end encryption inside the web client: the I/O shell of keys.js CallKeys, as
// visavis/client/e2ee.py is for the Python SDK. app.js makes one E2eeClient and tells it
// about sign-in, each call it joins, the call's `call.e2ee` / `call.participant` events
// and the end of the call. Every call, 1:1 or group, agrees keys:
//
//   group (SFU)  every sender and receiver of the group peer connection goes through the
//                SFrame worker (createEncodedStreams on Chromium: the peerConfig hook
//                turns encodedInsertableStreams on for group connections only;
//                RTCRtpScriptTransform elsewhere)
//   1:1 (P2P)    DTLS-SRTP is already end to end; each side signs its DTLS fingerprint
//                (the certificate is made here, before any peer connection, and given to
//                every connection of the device) and checks the other's before applying
//                its description: a swapped SDP stops the call
//   1:1 → group  the sender keys were exchanged during the 1:1 part: the group
//                connection encrypts from its first frame
//
// Alerts (bad announce signature, fingerprint mismatch, changed identity key, no signed
// fingerprint) stop the call with a warning; the call view shows the verification code.
// Application data API for other parts of the client (effects' reactions), see
// web/README.md: `app.e2ee.seal(bytes)` and `app.e2ee.open(senderDevice, bytes)`.

import { on } from "../js/core/hooks.js";
import { FrameCrypto } from "./index.js";
import { CallKeys } from "./keys.js";
import { DeviceIdentity, Pins, PIN_CHANGED, unb64, verificationCode } from "./identity.js";

export const ANNOUNCE_WAIT = 15000;
const GUEST_POLL_MS = 1000;
const GUEST_REANNOUNCE = 5; // polls

const ALERT_TEXT = {
  announce_signature: (who) => `Security warning: ${who}'s call key was not signed by their device. Someone may be intercepting this call, so it was stopped.`,
  fingerprint_mismatch: (who) => `Security warning: the connection to ${who} does not carry the key their device signed. Someone may be intercepting this call, so it was stopped.`,
  identity_changed: (who) => `Security warning: ${who}'s device key changed since your last call. The call was stopped before it connected. If they did not reinstall or reset that device, someone may be impersonating them.`,
  no_identity: (who) => `Security warning: ${who}'s device did not prove its identity, so the call was stopped.`,
  peer_alert: (who) => `Security warning: ${who}'s device stopped the call because its end-to-end check of this call failed. Someone may be intercepting calls between you.`,
};

/** The `a=fingerprint:` value of an SDP ("sha-256 AB:CD:…"), or null. */
export function sdpFingerprint(sdp) {
  const match = /^a=fingerprint:(\S+) (\S+)/m.exec(sdp || "");
  return match ? `${match[1].toLowerCase()} ${match[2].toUpperCase()}` : null;
}

class CallSession {
  constructor(client, callId) {
    this.client = client;
    this.callId = callId;
    this.frames = client.takeFrames();
    this.attached = new WeakSet();
    this.directory = new Map();
    this.handles = new Map(); // device → handle
    this.waiters = new Set();
    this.unverified = new Set(); // devices whose identity key nobody vouched for (guests)
    this.sending = Promise.resolve();
    this.inbox = Promise.resolve(); // events are handled one after another, in order
    this.alerted = false;
    this.code = "";
    this.keys = (async () => {
      await client.ready;
      this.directory.set(client.deviceId, client.identity.public);
      const keys = await CallKeys.create(callId, client.deviceId, client.identity, (d) => this.directory.get(d) ?? null, this.frames, client.fingerprint);
      keys.onAlert = (alert) => this._alert(alert);
      return keys;
    })();
    this.keys.catch((err) => console.error("visavis e2ee", err));
    this.started = false;
  }

  /** We are in the call (invite placed, answer accepted, handoff done): announce. */
  async start() {
    if (this.started) return;
    this.started = true;
    const keys = await this.keys;
    this._send(await keys.start());
  }

  /** Handle `fn` after every event that came before: a sender's key message must not
   * overtake its announce while the announce waits for the sender's identity lookup (a
   * key without its announce is refused, and a sender sends its key only once). */
  queue(fn) {
    this.inbox = this.inbox.then(fn).catch((err) => console.error("visavis e2ee", err));
    return this.inbox;
  }

  _send(outgoing) {
    const socket = this.client.app.socket;
    const guestApi = this.client.guestApi;
    this.sending = this.sending.then(async () => {
      for (const o of outgoing) {
        const body = { payload: o.payload };
        if (o.toDevice) body.to_device = o.toDevice;
        // a dropped message is a refused one
        if (guestApi) await guestApi.request("POST", "/api/guest/e2ee", body).catch(() => {});
        else await socket?.request({ type: "call.e2ee", call_id: this.callId, ...body }).catch(() => {});
      }
    });
    return this.sending;
  }

  /** A guest's identity key, or (on a guest's page) anyone's: from its announce's `ik`,
   * unverified (no directory to ask, nothing pinned). */
  _unverifiedKey(event) {
    try {
      const message = JSON.parse(event.payload);
      if (message?.kind !== "announce" || typeof message.ik !== "string") return null;
      const pub = unb64(message.ik);
      return pub.length === 32 ? pub : null;
    } catch {
      return null;
    }
  }

  async onMessage(event) {
    const keys = await this.keys;
    const device = event.from_device;
    const unverified = this.client.guestApi || event.from_user.startsWith("guest:");
    if (!this.directory.has(device) && unverified) {
      const pub = this._unverifiedKey(event);
      if (!pub) {
        keys.refused.unknown_device = (keys.refused.unknown_device ?? 0) + 1;
        return;
      }
      this.directory.set(device, pub);
      this.handles.set(device, event.from_user);
      this.unverified.add(device);
    } else if (!this.directory.has(device)) {
      let found;
      try {
        found = await this.client.deviceKeys(event.from_user);
        // looked up before this device joined (prefetched while ringing): ask again
        if (!found[device]) found = await this.client.deviceKeys(event.from_user, true);
      } catch {
        found = {};
      }
      const pub = found[device];
      if (!pub) {
        keys.refused.unknown_device = (keys.refused.unknown_device ?? 0) + 1;
        return;
      }
      if (this.directory.has(device)) {
        // looked up meanwhile by a concurrent message
      } else if (this.client.pins.check(event.from_user, device, pub) === PIN_CHANGED) {
        this.changed = { handle: event.from_user, device, pub };
        keys._alert(device, "identity_changed", `${event.from_user}'s device key changed`);
        return;
      } else {
        this.directory.set(device, pub);
        this.handles.set(device, event.from_user);
      }
    }
    const out = keys.members.has(device) ? [] : await keys.peerJoined(device);
    out.push(...(await keys.receive(device, event.payload)));
    if (keys.peers.has(device)) performance.mark("visavis:peer-keys");
    await this._send(out);
    await this._refreshCode(keys);
    for (const wake of this.waiters) wake();
  }

  async onLeft(event) {
    const keys = await this.keys;
    const gone = [...this.handles].filter(([d, h]) => h === event.user.handle && !(event.state === "handoff" && d === event.device_id)).map(([d]) => d);
    for (const device of gone) {
      this.handles.delete(device);
      this.directory.delete(device);
      await this._send(await keys.peerLeft(device));
    }
    if (gone.length) await this._refreshCode(keys);
  }

  /** A guest hears of leavers from the SFU only (it has no device socket for
   * call.participant): a member device that left draws fresh keys from everyone left. A
   * false report can only cost a rekey; keys still come from signed messages only. */
  onDeviceLeft(device) {
    return this.queue(async () => {
      const keys = await this.keys;
      if (!keys.members.has(device)) return;
      this.handles.delete(device);
      this.directory.delete(device);
      this.unverified.delete(device);
      await this._send(await keys.peerLeft(device));
      await this._refreshCode(keys);
    });
  }

  /** A guest left: like a device leaving, every sender draws a fresh key. */
  async onGuestLeft(device) {
    const keys = await this.keys;
    if (!this.unverified.has(device)) return;
    this.unverified.delete(device);
    this.handles.delete(device);
    this.directory.delete(device);
    await this._send(await keys.peerLeft(device));
    await this._refreshCode(keys);
  }

  async _refreshCode(keys) {
    const members = { [this.client.deviceId]: this.client.identity.public };
    for (const device of keys.peers.keys()) if (this.directory.has(device)) members[device] = this.directory.get(device);
    this.code = keys.peers.size ? await verificationCode(this.callId, members) : "";
    this.guests = [...keys.peers.keys()].filter((d) => this.unverified.has(d)).map((d) => (this.handles.get(d) ?? "").replace(/^guest:/, ""));
    this.client.publish();
  }

  /** 1:1: true if `sdp` carries the DTLS fingerprint `device` signed (waits for its
   * announce); otherwise the call is stopped with a warning. */
  async verifyDescription(device, sdp) {
    const keys = await this.keys;
    const deadline = Date.now() + ANNOUNCE_WAIT;
    while (!keys.peers.has(device) && !keys.stopped && Date.now() < deadline) {
      await new Promise((resolve) => {
        const wake = () => {
          this.waiters.delete(wake);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(wake, deadline - Date.now());
        this.waiters.add(wake);
      });
    }
    if (keys.stopped) return false;
    if (!keys.peers.has(device)) {
      keys._alert(device, "no_identity", "no signed announce in time");
      return false;
    }
    return keys.checkFingerprint(device, sdpFingerprint(sdp));
  }

  _alert(alert) {
    if (this.alerted) return;
    this.alerted = true;
    this._stop(alert).catch((err) => console.error("visavis e2ee", err));
  }

  async _stop(alert) {
    this.alert = alert;
    const who = this.handles.get(alert.device) ?? this.changed?.handle ?? "the other person";
    this.warning = (ALERT_TEXT[alert.reason] ?? ALERT_TEXT.announce_signature)(who);
    console.warn("visavis e2ee alert", alert.reason, alert.device);
    this.client.lastWarning = this.warning;
    this.client.changed = alert.reason === "identity_changed" ? this.changed : null;
    this.client.publish();
    const keys = await this.keys;
    if (alert.reason !== "peer_alert" && keys.members.has(alert.device)) {
      // the device concerned learns why (before this device leaves the call)
      await this._send([await keys.alertMessage(alert)]);
    }
    // the current call stops; an alert handled just after its call ended (the peer
    // alerted, then left) is still shown, unless another call has begun meanwhile
    const current = this.client.session;
    if (current === this || current === null) this.client.app.e2eeAlert?.(this.warning);
  }

  attach(endpoint, operation, kind) {
    if (this.attached.has(endpoint)) return;
    this.attached.add(endpoint);
    this.frames.attach(endpoint, operation, kind);
  }

  async end() {
    const keys = await this.keys.catch(() => null);
    await keys?.end();
    this.frames.close(); // the worker and every key it held are gone
    for (const wake of this.waiters) wake();
  }
}

export class E2eeClient {
  constructor(app) {
    this.app = app;
    this.identity = null;
    this.deviceId = null;
    this.fingerprint = null;
    this.certificate = null;
    this.session = null;
    this.changed = null; // {handle, device, pub} of the last changed device key
    this.lastWarning = "";
    this.pins = new Pins(globalThis.localStorage ?? null);
    this.ready = null;
    this.cache = new Map(); // handle → {device → public key}, per call
    on("peerConfig", (config, info) => this._peerConfig(config, info));
    on("sender", (sender, info) => this._for(info)?.attach(sender, "encrypt", info.kind));
    on("receiver", (receiver, info) => this._for(info)?.attach(receiver, "decrypt", info.kind));
  }

  _for(info) {
    const s = this.session;
    return s && info.purpose === "group" && info.callId === s.callId ? s : null;
  }

  _peerConfig(config, info) {
    if (this.certificate) config.certificates = [this.certificate];
    const s = this._for(info);
    if (s && s.frames.needsInsertableStreams) config.encodedInsertableStreams = true;
  }

  /** After sign-in: this device's identity (made once, kept in IndexedDB), published. */
  signedIn(session, api) {
    this.api = api;
    this.deviceId = session.device.id;
    this.ready = (async () => {
      this.identity = await DeviceIdentity.loadOrCreate(session.device.id);
      this.certificate = await RTCPeerConnection.generateCertificate({ name: "ECDSA", namedCurve: "P-256" });
      const fp = this.certificate.getFingerprints().find((f) => f.algorithm === "sha-256");
      this.fingerprint = `sha-256 ${fp.value.toUpperCase()}`;
      await api.request("PUT", "/api/devices/current/identity", { public_key: this.identity.publicB64 });
      this._warm();
    })();
    this.ready.catch((err) => console.error("visavis e2ee identity", err));
    return this.ready;
  }

  /** A contact's devices and identity keys as signaling hands them out, looked up once
   * per call (`fresh`: again); concurrent lookups share one request. */
  deviceKeys(handle, fresh = false) {
    let found = fresh ? null : this.cache.get(handle);
    if (!found) {
      found = this.api.request("GET", `/api/users/${encodeURIComponent(handle)}/devices`).then((list) => Object.fromEntries(list.map((d) => [d.device_id, unb64(d.public_key)])));
      this.cache.set(handle, found);
      found.catch(() => {
        if (this.cache.get(handle) === found) this.cache.delete(handle);
      });
    }
    return found;
  }

  /** Look the identity keys of `handles` up ahead (while they ring): their announces
   * then wait for no request. The same lookup as on arrival, only earlier; a device
   * that appears later is looked up again (CallSession.onMessage). */
  prefetch(handles) {
    for (const handle of handles) this.deviceKeys(handle).catch(() => {});
  }

  /** A guest from a call link (no account, no device socket): an ephemeral identity for
   * this call only, key messages through /api/guest/e2ee (sent, and polled every
   * second), the announce repeated every few seconds so that members who join later
   * answer it. Everyone shows the guest as unverified, and the guest everyone else.
   * The same mailbox holds the call's other events for the guest (call.reaction):
   * `onOther` gets them (one reader, since each read acknowledges the last). */
  guestBegin(callId, guestApi, guestId, onOther = () => {}) {
    this.guestApi = guestApi;
    this.deviceId = guestId;
    this.ready = DeviceIdentity.generate().then((identity) => {
      this.identity = identity;
    });
    const session = this.begin(callId);
    let after = 0;
    let ticks = 0;
    const poll = async () => {
      if (this.session !== session) return;
      try {
        const out = await guestApi.request("GET", `/api/guest/e2ee?after=${after}`);
        after = out.last;
        for (const event of out.events) {
          if (event.type === "call.e2ee") this.event(event);
          else onOther(event);
        }
        if (++ticks % GUEST_REANNOUNCE === 0) session._send(await (await session.keys).start());
      } catch {
        // the network blinked or the call is over: the guest page's own poll decides
      }
      if (this.session === session) this.guestTimer = setTimeout(poll, GUEST_POLL_MS);
    };
    this.guestTimer = setTimeout(poll, GUEST_POLL_MS);
    return session;
  }

  /** The worker for the next call, started ahead: a module worker loads its imports one
   * level per round trip, which would otherwise delay the first key (and so the callee's
   * announce and the caller's check) of every call. It holds no key until a call takes
   * it; each call's worker is terminated at its end (keys erased) and a fresh one warms. */
  _warm() {
    if (!this.spare && typeof Worker === "function") this.spare = new FrameCrypto();
  }

  takeFrames() {
    const frames = this.spare ?? new FrameCrypto();
    this.spare = null;
    return frames;
  }

  /** This device takes part in `callId`: its key state (made once per call). */
  begin(callId) {
    if (this.session?.callId !== callId) {
      this.session?.end();
      this.cache.clear();
      this.session = new CallSession(this, callId);
      this.publish();
    }
    return this.session;
  }

  /** A call.e2ee or call.participant event of the current call. */
  event(event) {
    const s = this.session;
    if (!s || event.call_id !== s.callId) return;
    if (event.type === "call.e2ee") s.queue(() => s.onMessage(event));
    else if (event.type === "call.participant" && (event.state === "left" || event.state === "handoff")) s.queue(() => s.onLeft(event));
    else if (event.type === "call.guest" && event.state === "left") s.queue(() => s.onGuestLeft(event.guest.id));
  }

  verifyDescription(callId, device, sdp) {
    const s = this.session;
    if (!s || s.callId !== callId) return Promise.resolve(false);
    return s.verifyDescription(device, sdp);
  }

  /** The call is over: erase its keys. */
  end() {
    const s = this.session;
    this.session = null;
    clearTimeout(this.guestTimer);
    this.cache.clear();
    this.publish();
    // after what is already in its inbox (an alert that came just before the call ended)
    const ended = s?.queue(() => s.end());
    if (this.identity && !this.guestApi) this._warm();
    return ended;
  }

  /** Trust a contact's changed device key (after checking with them). */
  acceptChanged(changed) {
    this.pins.accept(changed.handle, changed.device, changed.pub);
    this.changed = null;
    this.publish();
  }

  publish() {
    const s = this.session;
    const guest = Boolean(this.guestApi);
    this.store(s ? { callId: s.callId, code: s.code, warning: s.warning ?? "", changed: s.changed ?? null, guests: s.guests ?? [], guest } : null);
  }

  store(e2ee) {
    this.app.store?.set({ e2ee });
  }

  // -- for other parts of the client (web/README.md) -----------------------------------
  /** `bytes` sealed under this device's current sender key (a data key derived from it). */
  seal(bytes) {
    if (!this.session) return Promise.reject(new Error("no call"));
    return this.session.frames.seal(bytes);
  }

  /** The plaintext of `bytes` sealed by `senderDevice` (rejects if another sender's key
   * sealed it, or on auth / replay / unknown key: reason in `err.reason`). */
  async open(senderDevice, bytes) {
    const s = this.session;
    if (!s) throw new Error("no call");
    const { bytes: plain, kid } = await s.frames.open(bytes);
    const keys = await s.keys;
    const owner = keys.keyring.senderOf(kid);
    if (senderDevice != null && owner !== senderDevice && !(owner == null && senderDevice === this.deviceId)) {
      throw Object.assign(new Error("sealed by another sender"), { reason: "wrong_sender" });
    }
    return plain;
  }

  /** Counters for tests and the debug view. */
  async stats() {
    const s = this.session;
    if (!s) return null;
    const keys = await s.keys;
    return { frames: await s.frames.stats(), refused: { ...keys.refused }, alerts: [...keys.alerts], code: s.code, peers: [...keys.peers.keys()] };
  }
}
