// A 1:1 call, peer to peer (docs/protocol.md "A 1:1 call"), interoperable with the
// Python SDK (visavis/client/call.py).
//
// The caller prepares its offer while the callee's devices ring and sends it once
// `call.participant{joined}` names the answering device (release()); the callee answers
// it. Both trickle candidates after the description, then an empty candidate for
// end-of-candidates. ICE restart renegotiates on a fresh peer connection (new ICE
// credentials; the Python SDK cannot restart inside one): on ICE "failed", or
// "disconnected" that lasts DISCONNECT_GRACE, this side offers again and the other
// replaces its connection when the offer arrives. If both offer at once the caller's
// offer wins (the callee is the polite peer). Descriptions seen already (same ICE ufrag)
// and candidates of a replaced description are ignored; signals that could not be sent
// while the device socket was down are sent when it is back.
//
// Screen sharing (docs/protocol.md, "A 1:1 call"): the offer has audio, the camera and a
// second video m-line, the screen slot (sendrecv, sending nothing until a share). Either
// side shares by replaceTrack on its slot and says so with call.signal{screen}; the other
// side shows the slot's track as a tile of its own while the peer says it shares. An
// offer without a screen slot (the Python SDK's) leaves only the camera to share on.

import { createPeerConnection, addSender, onRemoteTracks, useTransceiver } from "./peer.js";
import { summarize } from "./quality.js";

export const DISCONNECT_GRACE = 2500;
export const RESTART_LIMIT = 3;
export const SETUP_TIMEOUT = 20000;

export function iceUfrag(sdp) {
  const match = /^a=ice-ufrag:(.+)$/m.exec(sdp || "");
  return match ? match[1].trim() : null;
}

/** The screen slot: the second video transceiver (m-line order), if the offer had one. */
export function screenSlot(pc) {
  return pc.getTransceivers().filter((t) => t.receiver.track.kind === "video")[1] ?? null;
}

export class DirectCall {
  /**
   * @param {object} o
   * @param {string} o.callId
   * @param {"caller"|"callee"} o.role  who placed the call (decides glare)
   * @param {object[]} o.iceServers      from welcome
   * @param {LocalMedia} o.media
   * @param {string[]} [o.sends]  kinds this side sends even if `media` is not open yet
   *        (it opens while the call is set up; LocalMedia.refresh() then puts the
   *        tracks on the senders, no renegotiation). Default: whatever is open.
   * @param {(payload) => boolean} o.signal  send call.signal fields; false when offline
   * @param {(device, sdp) => Promise<boolean>} [o.verify]  E2EE: does `sdp` carry the
   *        DTLS fingerprint `device` signed? false: the description is not applied (the
   *        E2EE client stops the call with a warning)
   * @param {(what: "connected"|"media_lost"|"failed", detail?) => void} o.onChange
   * @param {(stream: MediaStream) => void} o.onRemote
   * @param {(stream: MediaStream|null) => void} [o.onScreen]  the peer's screen share
   *        (null: it stopped)
   */
  constructor(o) {
    Object.assign(this, o);
    this.pc = null;
    this.released = o.role === "callee";
    this.outbox = [];
    this.unsent = [];
    this.pendingCandidates = [];
    this.restarts = 0;
    this.connectedOnce = false;
    this.closed = false;
    this.timers = {};
    this.queue = Promise.resolve();
    this.remoteStream = null;
    this.remoteScreen = null; // the peer's screen slot (a MediaStream of its track)
    this.peerSharing = false; // the peer said call.signal{screen: true}
    this.lastStats = null;
  }

  info() {
    return { purpose: "direct", callId: this.callId };
  }

  // -- sending signals ---------------------------------------------------------------
  _send(payload) {
    if (!this.released) {
      this.outbox.push(payload);
      return;
    }
    if (!this.signal(payload)) this.unsent.push(payload);
  }

  /** The callee answered on `deviceId`: the prepared offer and candidates go out. */
  release() {
    if (this.released) return;
    this.released = true;
    performance.mark("visavis:offer-released");
    const out = this.outbox;
    this.outbox = [];
    for (const payload of out) this._send(payload);
    this._armSetupTimer();
  }

  /** The device socket is back: send what could not be sent; restart a broken path. */
  socketOnline() {
    const unsent = this.unsent;
    this.unsent = [];
    for (const payload of unsent) this._send(payload);
    const state = this.pc?.iceConnectionState;
    if (this.connectedOnce && state !== "connected" && state !== "completed") this.restart();
  }

  // -- peer connections -----------------------------------------------------------------
  _newPc() {
    const old = this.pc;
    if (old) old.close();
    for (const sender of old?.getSenders() ?? []) this.media.detach(sender);
    const pc = createPeerConnection(this.iceServers, this.info());
    this.pc = pc;
    this.pendingCandidates = [];
    const stream = new MediaStream();
    this.remoteStream = stream;
    this.remoteScreen = null;
    onRemoteTracks(pc, this.info(), (event) => {
      if (pc !== this.pc) return;
      if (event.transceiver === screenSlot(pc)) {
        this.remoteScreen = new MediaStream([event.track]);
        this._screenShown();
        return;
      }
      stream.addTrack(event.track);
      this.onRemote(stream);
    });
    pc.addEventListener("icecandidate", (event) => {
      if (pc !== this.pc) return;
      const c = event.candidate;
      const ufrag = iceUfrag(pc.localDescription?.sdp);
      this._send({
        candidate: c
          ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex, usernameFragment: c.usernameFragment ?? ufrag }
          : { candidate: "", sdpMid: null, sdpMLineIndex: null, usernameFragment: ufrag },
      });
    });
    pc.addEventListener("iceconnectionstatechange", () => this._iceState(pc));
    return pc;
  }

  _iceState(pc) {
    if (pc !== this.pc || this.closed) return;
    const state = pc.iceConnectionState;
    if (state === "connected" || state === "completed") {
      performance.mark("visavis:ice-connected");
      clearTimeout(this.timers.disconnect);
      clearTimeout(this.timers.setup);
      this.connectedOnce = true;
      this.onChange("connected");
    } else if (state === "disconnected") {
      clearTimeout(this.timers.disconnect);
      this.timers.disconnect = setTimeout(() => {
        if (pc === this.pc && pc.iceConnectionState === "disconnected") this.restart();
      }, DISCONNECT_GRACE);
      this.onChange("media_lost");
    } else if (state === "failed") {
      this.restart();
    }
  }

  _armSetupTimer() {
    clearTimeout(this.timers.setup);
    this.timers.setup = setTimeout(() => {
      if (!this.closed && !this.connectedOnce) this.onChange("failed", "no media path within the setup time");
    }, SETUP_TIMEOUT);
  }

  _serial(fn) {
    this.queue = this.queue.then(fn).catch((err) => {
      console.error("visavis call", err);
      if (!this.closed) this.onChange("failed", String(err?.message ?? err));
    });
    return this.queue;
  }

  _addLocal(pc) {
    for (const kind of ["audio", "video", "screen"]) addSender(pc, this.media, kind, this.info());
  }

  // -- screen sharing --------------------------------------------------------------------
  /** Can a share go out as a tile of its own (the negotiated call has a screen slot)? */
  canShareTile() {
    const slot = this.pc && screenSlot(this.pc);
    return Boolean(slot && /send/.test(slot.currentDirection ?? slot.direction));
  }

  /** This side started or stopped sharing (media.js already put it on the slot). */
  setScreen(on) {
    if (Boolean(this.sentScreen) === on || (on && !this.canShareTile())) return;
    this.sentScreen = on;
    this._send({ screen: on });
  }

  /** The other person moved to another device: tell that one about a share going on. */
  peerMoved() {
    this.peerSharing = false;
    this._screenShown();
    if (this.sentScreen) this._send({ screen: true });
  }

  _screenShown() {
    this.onScreen?.(this.peerSharing && this.remoteScreen ? this.remoteScreen : null);
  }

  // -- the caller's first offer, and every restart ---------------------------------------
  prepareOffer() {
    return this._serial(() => this._offer());
  }

  async _offer() {
    const pc = this._newPc();
    this._addLocal(pc);
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    performance.mark("visavis:offer-ready");
    this._send({ description: { type: "offer", sdp: offer.sdp } });
  }

  /** ICE restart on a fresh peer connection (see the theory above). */
  restart() {
    if (this.closed) return;
    if (this.restarts >= RESTART_LIMIT) {
      this.onChange("failed", "the media path broke and could not be restored");
      return;
    }
    this.restarts += 1;
    this.onChange("media_lost");
    this._armSetupTimer();
    this._serial(() => this._offer());
  }

  // -- incoming signals ------------------------------------------------------------------
  handleSignal(event) {
    return this._serial(async () => {
      if (this.closed) return;
      if (event.screen != null) {
        this.peerSharing = event.screen;
        this._screenShown();
      }
      if (event.description) await this._description(event.description);
      if (event.candidate) await this._candidate(event.candidate);
    });
  }

  async _description(desc) {
    const pc = this.pc;
    const ufrag = iceUfrag(desc.sdp);
    const current = iceUfrag(pc?.remoteDescription?.sdp);
    if (ufrag && ufrag === current) return; // sent again after a signaling drop
    // (performance marks: where a call's setup time goes, benchmarks/web_client.py)
    performance.mark(`visavis:${desc.type}-in`);
    if (this.verify && !(await this.verify(this.remoteDevice, desc.sdp))) return;
    performance.mark(`visavis:${desc.type}-verified`);
    if (desc.type === "answer") {
      if (!pc || pc.signalingState !== "have-local-offer") return; // stale
      await pc.setRemoteDescription({ type: "answer", sdp: desc.sdp });
      await this._flushCandidates();
      return;
    }
    if (pc && pc.signalingState === "have-local-offer" && this.role === "caller") return; // ours wins
    if (pc) this.onChange("media_lost");
    const next = this._newPc();
    await next.setRemoteDescription({ type: "offer", sdp: desc.sdp });
    performance.mark("visavis:offer-applied");
    const slot = screenSlot(next);
    for (const transceiver of next.getTransceivers()) {
      const kind = transceiver === slot ? "screen" : transceiver.receiver.track.kind;
      useTransceiver(transceiver, this.media, kind, this.info(), this.sends?.includes(kind));
    }
    const answer = await next.createAnswer();
    await next.setLocalDescription(answer);
    performance.mark("visavis:answer-out");
    this._send({ description: { type: "answer", sdp: answer.sdp } });
    this._armSetupTimer();
    await this._flushCandidates();
  }

  async _candidate(c) {
    const pc = this.pc;
    if (!pc || !pc.remoteDescription) {
      this.pendingCandidates.push(c);
      return;
    }
    const ufrag = iceUfrag(pc.remoteDescription.sdp);
    if (c.usernameFragment && ufrag && c.usernameFragment !== ufrag) return; // replaced description
    await pc.addIceCandidate(c.candidate ? c : { candidate: "", sdpMid: c.sdpMid ?? "0", sdpMLineIndex: c.sdpMLineIndex ?? 0 }).catch((err) => {
      console.warn("visavis: unusable candidate", err);
    });
  }

  async _flushCandidates() {
    const pending = this.pendingCandidates;
    this.pendingCandidates = [];
    for (const c of pending) await this._candidate(c);
  }

  // -- the call view ---------------------------------------------------------------------
  async stats() {
    if (!this.pc) return null;
    return summarize(await this.pc.getStats(), performance.now());
  }

  /** Video frames decoded from the peer's camera and from its screen slot (getStats). */
  async received() {
    const out = { camera: 0, screen: 0 };
    const pc = this.pc;
    if (!pc) return out;
    const screenMid = screenSlot(pc)?.mid;
    (await pc.getStats()).forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") out[r.mid === screenMid ? "screen" : "camera"] += r.framesDecoded ?? 0;
    });
    return out;
  }

  close() {
    this.closed = true;
    for (const t of Object.values(this.timers)) clearTimeout(t);
    for (const sender of this.pc?.getSenders() ?? []) this.media.detach(sender);
    this.pc?.close();
    this.pc = null;
  }
}
