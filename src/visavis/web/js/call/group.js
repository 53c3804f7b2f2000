// A group call through the SFU (docs/sfu.md, "Control protocol"): one control WebSocket
// and one peer connection. This client always offers: sendonly transceivers publish the
// microphone and the camera (three simulcast layers, 1080p on top), recvonly ones are
// receive slots; the SFU's answer says which participant each slot carries. When it asks
// (`renegotiate`), more slots are added and the offer goes again. Tiles shown on screen
// are reported with `layout` so the others get low layers or nothing.
// A screen share is one more sendonly transceiver (one encoding, SFrame like the camera),
// named in the offer's `screen`; stopping makes it inactive, and the SFU unpublishes it.
// The answer's `streams` say which slots carry someone's screen (`source`).
//
// Losing the SFU (its WebSocket closes, ICE fails, or nothing arrives for STALL_MS) is
// reported to signaling (`call.media_lost`, as the Python SDK does): enough reports move
// the room to another node at once (`call.room_moved` → move()), long before the dead
// node's registry record expires (docs/fleet.md, "Participants' reports").

import { createPeerConnection, addSender, onRemoteTracks } from "./peer.js";
import { summarize } from "./quality.js";
import { StallDetector, bytesReceived, mediaReceived } from "./medialoss.js";
import { preferRoomCodec, withScalability } from "./codecs.js";

// Nothing received from the SFU for this long (it sends RTCP every second, media more
// often) means the path or the node is gone. Long enough that a busy machine's hiccup
// is not a loss; the control WebSocket's close catches a dead process at once anyway.
export const STALL_MS = 4000;
const WATCH_EVERY_MS = 1000;

// Lowest layer first, as the SFU expects; the camera captures up to 1080p.
export const SIMULCAST = [
  { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 200_000 },
  { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 700_000 },
  { rid: "f", scaleResolutionDownBy: 1, maxBitrate: 2_500_000 },
];

// A grid change reaches the SFU once the grid held still this long (setLayout).
export const LAYOUT_SETTLE_MS = 250;

const layoutKey = (l) => `${[...l.visible].sort()}|${[...l.thumbnails].sort()}`;

// A shared screen: one encoding (text stays sharp; the SFU forwards it as it comes).
export const SCREEN_ENCODING = { maxBitrate: 2_500_000 };

/** Does `sdp` send on the m-line `mid` (sendonly or sendrecv)? */
export function sendsOn(sdp, mid) {
  const section = sdp.split(/\r?\nm=/).find((m) => new RegExp(`^a=mid:${mid}\\r?$`, "m").test(m));
  return Boolean(section && /^a=(sendonly|sendrecv)\r?$/m.test(section));
}

export class GroupCall {
  /**
   * @param {object} o
   * @param {string} o.callId
   * @param {{url, token, room_id}} o.room   from call.room
   * @param {object[]} o.iceServers
   * @param {LocalMedia} o.media
   * @param {() => void} o.onUpdate          participants, streams or speaker changed
   * @param {(what: "connected"|"media_lost"|"failed", detail?) => void} o.onChange
   * @param {() => Promise<{url, token}>} o.refreshToken  a fresh join token (REST)
   * @param {(url: string) => Promise<unknown>} [o.reportLost]  tell signaling this
   *   device lost the SFU at `url` (call.media_lost; guests have no way to)
   * @param {(p: {participant_id, user, device}) => void} [o.onLeft]  someone left the room
   *   for good (reason "left"; not a replaced or timed-out connection that comes back)
   */
  constructor(o) {
    Object.assign(this, o);
    this.pc = null;
    this.ws = null;
    this.participantId = null;
    this.participants = new Map(); // participant_id → {participant_id, user, device}
    this.slots = new Map(); // mid → {participant_id, user, kind}
    this.tracks = new Map(); // mid → MediaStreamTrack
    this.dominant = null;
    this.sentLayout = null; // what the SFU was last told on this connection (layoutKey)
    this.wantedLayout = null;
    this.layoutTimer = null;
    this.chain = Promise.resolve();
    this.answerWaiter = null;
    this.closed = false;
    this.rejoins = 0;
    this.reported = 0; // the generation (connection) whose loss was reported
    this.watch = null;
  }

  info() {
    return { purpose: "group", callId: this.callId };
  }

  join() {
    this.generation = (this.generation ?? 0) + 1;
    this.chain = Promise.resolve();
    this.ws = new WebSocket(this.room.url);
    this.ws.onopen = () => this.ws.send(JSON.stringify({ type: "join", token: this.room.token }));
    this.ws.onmessage = (event) => this._message(JSON.parse(event.data));
    this.ws.onclose = () => this._socketClosed();
  }

  _message(msg) {
    switch (msg.type) {
      case "joined":
        this.participantId = msg.participant_id;
        this.videoCodec = msg.video_codec ?? "vp8"; // the room's one video codec
        for (const p of msg.participants) this.participants.set(p.participant_id, p);
        this._publish();
        this._negotiate(msg.audio, msg.video);
        break;
      case "answer":
        this.answerWaiter?.(msg);
        break;
      case "renegotiate":
        this._negotiate(msg.audio, msg.video);
        break;
      case "participant_joined":
        this.participants.set(msg.participant.participant_id, msg.participant);
        break;
      case "participant_left": {
        const gone = this.participants.get(msg.participant_id);
        if (gone && msg.reason === "left") this.onLeft?.(gone);
        this.participants.delete(msg.participant_id);
        if (this.dominant === msg.participant_id) this.dominant = null;
        break;
      }
      case "dominant_speaker":
        this.dominant = msg.participant_id;
        break;
      case "error":
        console.warn("visavis sfu", msg.code, msg.message);
        if (msg.code === "bad_sdp" || msg.code === "unsupported_codec") this.answerWaiter?.(null); // our offer was refused: no answer will come
        if (msg.code === "unauthorized" || msg.code === "room_full" || msg.code === "unsupported_codec") this.onChange("failed", msg.message);
        else if (msg.code === "removed") this._rejoin(); // e.g. no media in time: join again
        break;
      default:
        break;
    }
    this.onUpdate();
  }

  _publish() {
    const pc = createPeerConnection(this.iceServers, this.info());
    this.pc = pc;
    onRemoteTracks(pc, this.info(), (event) => {
      const mid = event.transceiver.mid;
      this.tracks.set(mid, event.track);
      this.onUpdate();
    });
    pc.addEventListener("iceconnectionstatechange", () => {
      const state = pc.iceConnectionState;
      if (state === "connected" || state === "completed") this.onChange("connected");
      else if (state === "disconnected") this.onChange("media_lost");
      else if (state === "failed") this._lost();
    });
    this._watchMedia(pc);
    addSender(pc, this.media, "audio", this.info(), { direction: "sendonly" });
    addSender(pc, this.media, "video", this.info(), { direction: "sendonly", encodings: withScalability(SIMULCAST.map((e) => ({ ...e })), this.videoCodec) });
    this.screenTx = null;
    if (this.media.outgoing("screen")) this._screenOn(pc);
  }

  _screenOn(pc) {
    if (this.screenTx) this.screenTx.direction = "sendonly";
    else this.screenTx = addSender(pc, this.media, "screen", this.info(), { direction: "sendonly", encodings: [{ ...SCREEN_ENCODING }] });
  }

  canShareTile() {
    return true;
  }

  /** This device started or stopped sharing its screen (media.js put the track on the
   * screen sender): publish or unpublish it. */
  setScreen(on) {
    const pc = this.pc;
    if (!pc || this.closed || Boolean(this.screenTx && this.screenTx.direction === "sendonly") === on) return;
    if (on) this._screenOn(pc);
    else this.screenTx.direction = "inactive";
    this._negotiate();
  }

  /** Offer (again), with `audio` / `video` more receive slots than the SFU saw in the
   * last offer it answered (what `joined` and `renegotiate` count from). Requests that
   * arrive while an offer is on its way or queued were counted from that same answered
   * offer, so they set a total, not an increment: a burst of joiners (31 in a big room)
   * would otherwise add their slots several times over, and an offer of ~80 m-lines
   * outgrows the SFU's SDP limit (refused, and the call stops getting anyone new). One
   * queued offer serves every request that came before it ran. */
  _negotiate(audio = 0, video = 0) {
    const generation = this.generation;
    const target = (this.recvTarget ??= { audio: 0, video: 0 });
    const answered = this.recvAnswered ?? { audio: 0, video: 0 };
    target.audio = Math.max(target.audio, answered.audio + audio);
    target.video = Math.max(target.video, answered.video + video);
    if (this.offerQueued) return;
    this.offerQueued = true;
    this.chain = this.chain
      .then(async () => {
        this.offerQueued = false;
        const pc = this.pc;
        if (!pc || this.closed || generation !== this.generation) return;
        const offered = { audio: 0, video: 0 };
        for (const t of pc.getTransceivers()) if (t.direction === "recvonly") offered[t.receiver.track.kind] += 1;
        for (const kind of ["audio", "video"]) {
          for (; offered[kind] < target[kind]; offered[kind]++) pc.addTransceiver(kind, { direction: "recvonly" });
        }
        const unable = preferRoomCodec(pc, this.videoCodec);
        if (unable) {
          this.onChange("failed", unable);
          return;
        }
        const offer = await pc.createOffer();
        await pc.setLocalDescription(offer);
        const answered = new Promise((resolve) => {
          this.answerWaiter = resolve;
        });
        // what this very offer says (a share stopped meanwhile makes the next offer)
        const mid = this.screenTx?.mid;
        const screen = mid != null && sendsOn(offer.sdp, mid) ? [mid] : [];
        this.ws.send(JSON.stringify({ type: "offer", sdp: offer.sdp, screen }));
        const answer = await answered;
        if (!answer || generation !== this.generation) return; // rejoined meanwhile
        this.recvAnswered = offered;
        this.slots = new Map(answer.streams.map((s) => [s.mid, s]));
        await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
        this.onUpdate();
      })
      .catch((err) => console.error("visavis sfu negotiation", err));
  }

  /** Per remote participant: {participant_id, user, guest, audio, video, screen}
   * (MediaStreamTracks; `screen` while they share). */
  remotes() {
    const out = new Map();
    for (const [id, p] of this.participants) {
      // A guest from a call link is `guest:<name>` (no handle contains ":").
      const guest = p.user.startsWith("guest:");
      const user = guest ? p.user.slice("guest:".length) : p.user;
      if (id !== this.participantId) out.set(id, { participant_id: id, user, guest, audio: null, video: null, screen: null });
    }
    for (const [mid, slot] of this.slots) {
      const entry = out.get(slot.participant_id);
      const track = this.tracks.get(mid);
      if (entry && track) entry[slot.source === "screen" ? "screen" : slot.kind] = track;
    }
    return [...out.values()];
  }

  /** Tell the SFU which participants' tiles are on screen: `visible` ones large enough
   * for its high layers, `thumbnails` small ones (the lowest layer); it sends no video
   * at all of the participants off screen. The first layout of a connection goes at
   * once; a change goes when the grid has held still for LAYOUT_SETTLE_MS (a window
   * being resized, a tile growing: one message, not a layer switch per frame). */
  setLayout(visible, thumbnails = []) {
    const wanted = { type: "layout", visible: [...visible], thumbnails: thumbnails.filter((id) => !visible.includes(id)) };
    const key = layoutKey(wanted);
    if (this.wantedLayout && key === layoutKey(this.wantedLayout) && (this.layoutTimer || key === this.sentLayout)) return; // (every render asks)
    this.wantedLayout = wanted;
    clearTimeout(this.layoutTimer);
    this.layoutTimer = null;
    if (key === this.sentLayout) return;
    if (this.sentLayout == null) this._sendLayout();
    else this.layoutTimer = setTimeout(() => this._sendLayout(), LAYOUT_SETTLE_MS);
  }

  _sendLayout() {
    this.layoutTimer = null;
    const wanted = this.wantedLayout;
    if (!wanted || !this.participantId || this.ws?.readyState !== WebSocket.OPEN) return; // the next render asks again
    this.sentLayout = layoutKey(wanted);
    this.layout = wanted;
    this.ws.send(JSON.stringify(wanted));
  }

  /** Watch bytes received on this connection: a stall counts as losing the SFU. */
  _watchMedia(pc) {
    clearInterval(this.watch);
    const stall = new StallDetector(STALL_MS);
    const generation = this.generation;
    this.watch = setInterval(async () => {
      if (this.pc !== pc || this.closed) return;
      const report = await pc.getStats().catch(() => null);
      if (!report || this.pc !== pc || this.closed || generation !== this.generation) return;
      const now = performance.now();
      const others = [...this.participants.keys()].some((id) => id !== this.participantId);
      // Alone, a live SFU may have nothing to send; before the first media packet the
      // connection is still being set up (ICE and negotiation judge that).
      if (!others || !mediaReceived(report)) stall.idle(now);
      else if (stall.observe(now, bytesReceived(report))) this._lost({ rejoin: false });
    }, WATCH_EVERY_MS);
  }

  /** This connection to the SFU is lost: report it once (enough reports move the room
   * now), then rejoin (unless the room moves first). A stall alone only reports: if the
   * node hung, the others' reports move the room; if only this device's path broke, ICE
   * fails and it rejoins then; and a busy machine's long pause costs no rejoin. */
  _lost({ rejoin = true } = {}) {
    if (this.closed) return;
    if (this.reported !== this.generation) {
      this.reported = this.generation;
      Promise.resolve(this.reportLost?.(this.room.url)).catch(() => {}); // best effort: the registry TTL is the backstop
    }
    if (rejoin) this._rejoin();
  }

  async _rejoin() {
    if (this.closed || this.rejoining) return;
    this.rejoining = true;
    try {
      await this._rejoinOnce();
    } finally {
      this.rejoining = false;
    }
  }

  async _rejoinOnce() {
    if (this.rejoins >= 3) {
      this.onChange("failed", "the group call's media path broke");
      return;
    }
    this.rejoins += 1;
    this.onChange("media_lost");
    // If the SFU node died, signaling moves the room within ~2.5 s (call.room_moved →
    // move()); until then a fresh token still names the dead node, so do not burn the
    // retries at once.
    const moves = this.moves ?? 0;
    await new Promise((resolve) => setTimeout(resolve, 1000 * this.rejoins));
    if (this.closed || (this.moves ?? 0) !== moves) return; // moved meanwhile
    try {
      this.room = { ...this.room, ...(await this.refreshToken()) };
    } catch (err) {
      this.onChange("failed", String(err?.message ?? err));
      return;
    }
    this._teardown();
    this.closed = false;
    this.join();
  }

  /** The room moved to another SFU node (call.room_moved): join it there, same tracks. */
  move(room) {
    if (this.closed) return;
    this.onChange("media_lost");
    this._teardown();
    this.room = { ...this.room, url: room.url, token: room.token };
    this.closed = false;
    this.rejoins = 0;
    this.moves = (this.moves ?? 0) + 1;
    this.join();
  }

  _socketClosed() {
    if (!this.closed) this._lost();
  }

  /** Per remote participant: video frames decoded (camera, and `screen` for a share),
   * the size of the last camera frame decoded (the simulcast layer the SFU forwards),
   * audio samples received (getStats). */
  async received() {
    const out = {};
    if (!this.pc) return out;
    const report = await this.pc.getStats();
    report.forEach((r) => {
      if (r.type !== "inbound-rtp" || !r.mid) return;
      const slot = this.slots.get(r.mid);
      if (!slot) return;
      const entry = (out[slot.participant_id] ??= { video: 0, audio: 0, width: 0, height: 0, screen: 0 });
      if (r.kind === "video" && slot.source === "screen") entry.screen += r.framesDecoded ?? 0;
      else if (r.kind === "video") {
        entry.video += r.framesDecoded ?? 0;
        entry.width = Math.max(entry.width, r.frameWidth ?? 0);
        entry.height = Math.max(entry.height, r.frameHeight ?? 0);
      } else entry.audio += r.totalSamplesReceived ?? 0;
    });
    return out;
  }

  async stats() {
    if (!this.pc) return null;
    return summarize(await this.pc.getStats(), performance.now());
  }

  _teardown() {
    this.closed = true;
    clearInterval(this.watch);
    this.watch = null;
    this.answerWaiter?.(null); // a negotiation waiting for this socket's answer gives up
    this.answerWaiter = null;
    if (this.ws) {
      this.ws.onclose = null;
      if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: "leave" }));
      this.ws.close();
    }
    for (const sender of this.pc?.getSenders() ?? []) this.media.detach(sender);
    this.pc?.close();
    this.pc = null;
    this.screenTx = null;
    this.slots.clear();
    this.tracks.clear();
    this.participants.clear();
    this.recvTarget = null; // the next connection starts with no receive slots
    this.recvAnswered = null;
    this.offerQueued = false;
    clearTimeout(this.layoutTimer);
    this.layoutTimer = null;
    this.sentLayout = null;
  }

  close() {
    this._teardown();
  }
}
