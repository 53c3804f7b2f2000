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
      const done = this.pending.get(e.data.id);
      if (done) {
        this.pending.delete(e.data.id);
        done(e.data);
      }
    };
  }

  /** True when this browser needs `encodedInsertableStreams: true` (Chromium). */
  get needsInsertableStreams() {
    return "createEncodedStreams" in RTCRtpSender.prototype;
  }

  request(msg) {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
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

  async stats() {
    return (await this.request({ type: "stats" })).stats;
  }

  close() {
    this.worker.terminate();
  }
}
