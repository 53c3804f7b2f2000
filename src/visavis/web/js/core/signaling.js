// The device WebSocket at /ws (docs/protocol.md): hello with the token, welcome, requests
// answered by result/error (matched by id), events numbered by seq. On a drop it
// reconnects with backoff and resumes from the last seq processed, so no event is lost
// or seen twice; it acknowledges what it processed so the server can forget it.

export const CLOSE_UNAUTHORIZED = 4401;
export const CLOSE_REPLACED = 4409;
const PING_INTERVAL = 20000;
const ACK_DELAY = 300;
const REQUEST_TIMEOUT = 15000;

export class RequestFailed extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

export class DeviceSocket {
  /**
   * @param {string} url  ws(s)://host/ws
   * @param {string} token the device token
   * @param {{onWelcome, onEvent, onStatus, onClosed}} handlers
   *   onStatus("connecting"|"online"|"offline"); onClosed(code) when it gives up for good
   *   (token revoked, or replaced by another tab of this browser).
   */
  constructor(url, token, handlers) {
    this.url = url;
    this.token = token;
    this.handlers = handlers;
    this.ws = null;
    this.lastSeq = null;
    this.acked = null;
    this.nextId = 1;
    this.pending = new Map();
    this.stopped = false;
    this.attempt = 0;
    this.welcome = null;
    this.timers = { ping: null, ack: null, retry: null };
  }

  connect() {
    if (this.stopped) return;
    this.handlers.onStatus?.("connecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      const hello = { type: "hello", token: this.token };
      if (this.lastSeq != null) hello.resume_after = this.lastSeq;
      ws.send(JSON.stringify(hello));
    };
    ws.onmessage = (event) => {
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return;
      }
      this._receive(msg);
    };
    ws.onclose = (event) => this._closed(ws, event.code);
  }

  _receive(msg) {
    if (msg.type === "welcome") {
      this.attempt = 0;
      this.welcome = msg;
      const resumed = msg.resumed && this.lastSeq != null;
      if (!resumed) this.lastSeq = msg.head;
      clearInterval(this.timers.ping);
      this.timers.ping = setInterval(() => this.send({ type: "ping" }), PING_INTERVAL);
      this.handlers.onStatus?.("online");
      this.handlers.onWelcome?.(msg, resumed);
      return;
    }
    if (msg.type === "result" || msg.type === "error") {
      const waiter = msg.re != null ? this.pending.get(msg.re) : null;
      if (waiter) {
        this.pending.delete(msg.re);
        clearTimeout(waiter.timer);
        if (msg.type === "result") waiter.resolve(msg);
        else waiter.reject(new RequestFailed(msg.code, msg.message));
      } else if (msg.type === "error") {
        console.warn("visavis signaling error", msg.code, msg.message);
      }
      return;
    }
    if (msg.type === "pong") return;
    if (typeof msg.seq === "number" && msg.seq > 0) {
      if (this.lastSeq != null && msg.seq <= this.lastSeq) return; // seen already
      this.lastSeq = msg.seq;
      this._scheduleAck();
    }
    this.handlers.onEvent?.(msg);
  }

  _scheduleAck() {
    if (this.timers.ack) return;
    this.timers.ack = setTimeout(() => {
      this.timers.ack = null;
      if (this.lastSeq != null && this.lastSeq !== this.acked && this.send({ type: "ack", seq: this.lastSeq })) {
        this.acked = this.lastSeq;
      }
    }, ACK_DELAY);
  }

  _closed(ws, code) {
    if (ws !== this.ws) return;
    clearInterval(this.timers.ping);
    this.ws = null;
    for (const [, waiter] of this.pending) {
      clearTimeout(waiter.timer);
      waiter.reject(new RequestFailed("disconnected", "Lost the connection to the server. Try again."));
    }
    this.pending.clear();
    if (this.stopped) return;
    if (code === CLOSE_UNAUTHORIZED || code === CLOSE_REPLACED) {
      this.stopped = true;
      this.handlers.onStatus?.("offline");
      this.handlers.onClosed?.(code);
      return;
    }
    this.handlers.onStatus?.("offline");
    const delay = Math.min(5000, 250 * 2 ** this.attempt) * (0.75 + Math.random() / 2);
    this.attempt += 1;
    this.timers.retry = setTimeout(() => this.connect(), delay);
  }

  /** Send without waiting for an answer; false when not connected. */
  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || !this.welcome) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /** Send a request and wait for its result (rejects with RequestFailed on error). */
  request(msg) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      if (!this.send({ ...msg, id })) {
        reject(new RequestFailed("disconnected", "Not connected to the server. Try again in a moment."));
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RequestFailed("timeout", "The server did not answer. Try again."));
      }, REQUEST_TIMEOUT);
      this.pending.set(id, { resolve, reject, timer });
    });
  }

  /** Drop the connection now (tests, network change); it reconnects and resumes. */
  drop() {
    this.ws?.close();
  }

  close() {
    this.stopped = true;
    clearInterval(this.timers.ping);
    clearTimeout(this.timers.retry);
    clearTimeout(this.timers.ack);
    this.ws?.close(1000);
    this.ws = null;
  }
}
