// Page side of browser E2EE: one worker holds the keys and transforms every frame.
//
//   const e2ee = new FrameCrypto();             // before creating peer connections
//   pcConfig.encodedInsertableStreams = e2ee.needsInsertableStreams;
//   e2ee.attachSender(sender, "video"); e2ee.attachReceiver(receiver, "audio");
//   await e2ee.setSendKey(kid, keyBytes); await e2ee.addKey(kid, keyBytes);
//
// Chromium: createEncodedStreams (needs `encodedInsertableStreams: true` on the
// RTCPeerConnection; LiveKit reports InvalidStateError with ScriptTransform there).
// Elsewhere: RTCRtpScriptTransform.

export class FrameCrypto {
  constructor(workerUrl = new URL("./worker.js", import.meta.url)) {
    this.worker = new Worker(workerUrl, { type: "module", name: "visavis-e2ee" });
    this.nextId = 1;
    this.pending = new Map();
    this.worker.onmessage = (e) => {
      const waiter = this.pending.get(e.data.id);
      if (!waiter) return;
      this.pending.delete(e.data.id);
      if (e.data.type === "error") waiter.reject(Object.assign(new Error(e.data.message), { reason: e.data.reason }));
      else waiter.resolve(e.data);
    };
  }

  /** True when this browser needs `encodedInsertableStreams: true` (Chromium). */
  get needsInsertableStreams() {
    return "createEncodedStreams" in RTCRtpSender.prototype;
  }

  request(msg) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...msg, id });
    });
  }

  attach(endpoint, operation, kind) {
    if (this.needsInsertableStreams) {
      const { readable, writable } = endpoint.createEncodedStreams();
      this.worker.postMessage({ type: "streams", readable, writable, operation, kind }, [readable, writable]);
    } else {
      endpoint.transform = new RTCRtpScriptTransform(this.worker, { operation, kind });
    }
  }

  attachSender(sender, kind) {
    this.attach(sender, "encrypt", kind);
  }

  attachReceiver(receiver, kind) {
    this.attach(receiver, "decrypt", kind);
  }

  setSendKey(kid, key) {
    return this.request({ type: "sendKey", kid: String(kid), key: Array.from(key) });
  }

  addKey(kid, key) {
    return this.request({ type: "addKey", kid: String(kid), key: Array.from(key) });
  }

  removeKey(kid) {
    return this.request({ type: "removeKey", kid: String(kid) });
  }

  erase() {
    return this.request({ type: "erase" });
  }

  /** Application bytes sealed with this device's current sender key (a data key
   * derived from it): SFrame header ‖ AES-GCM. Rejects with reason "no_send_key". */
  async seal(bytes) {
    return (await this.request({ type: "seal", bytes: Uint8Array.from(bytes) })).bytes;
  }

  /** {bytes, kid} of a sealed message, or a rejection with `reason` (unknown_kid, auth,
   * replay, truncated), counted in stats().dropped as data_<reason>. */
  async open(bytes) {
    const { bytes: plain, kid } = await this.request({ type: "open", bytes: Uint8Array.from(bytes) });
    return { bytes: plain, kid: BigInt(kid) };
  }

  async stats() {
    return (await this.request({ type: "stats" })).stats;
  }

  close() {
    this.worker.terminate();
  }
}
