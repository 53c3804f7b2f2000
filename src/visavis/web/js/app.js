// The one place that turns server messages and user actions into state changes: the
// views call the actions below and render `store`; nothing else touches the connection.

import { Api, ApiError } from "./core/api.js";
import { DeviceSocket, CLOSE_REPLACED } from "./core/signaling.js";
import { Store } from "./core/store.js";
import { IDLE, transition } from "./core/callstate.js";
import { Ringtone } from "./core/ringtone.js";
import { LocalMedia } from "./call/media.js";
import { DirectCall } from "./call/direct.js";
import { GroupCall } from "./call/group.js";
import { judge } from "./call/quality.js";
import { enablePush, ringHandled } from "./core/push.js";
import { run as runHook } from "./core/hooks.js";
import { E2eeClient } from "../e2ee/client.js";

const SESSION_KEY = "visavis.session";
const ENDED_LINGER = 2500;
// A call link is this server's `/#join=<token>` (docs/protocol.md, "Call links").
const JOIN_PREFIX = "#join=";
const GUEST_POLL_MS = 1000;

const LINK_ERRORS = {
  link_revoked: "This call link was turned off by the person who made it.",
  link_expired: "This call link has expired. Ask for a new one.",
  link_not_found: "This call link does not exist. Check it, or ask for a new one.",
  bad_token: "This call link does not exist. Check it, or ask for a new one.",
};
const linkError = (err) => LINK_ERRORS[err?.code] ?? String(err?.message ?? err);

function loadJson(key, fallback) {
  try {
    return JSON.parse(localStorage.getItem(key)) ?? fallback;
  } catch {
    return fallback;
  }
}

export function defaultDeviceName(ua = navigator.userAgent) {
  const browser = /Firefox\//.test(ua) ? "Firefox" : /Edg\//.test(ua) ? "Edge" : /Chrom(e|ium)\//.test(ua) ? "Chrome" : /Safari\//.test(ua) ? "Safari" : "Browser";
  const os = /Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iOS" : /Mac OS X/.test(ua) ? "macOS" : /Windows/.test(ua) ? "Windows" : /Linux/.test(ua) ? "Linux" : "";
  return os ? `${browser} on ${os}` : browser;
}

export class App {
  constructor() {
    this.api = new Api();
    this.store = new Store({
      screen: "auth", // auth | home | devices
      tab: "contacts", // contacts | history (home)
      session: null, // {token, user, device}
      status: "offline", // the device socket: connecting | online | offline | replaced
      call: IDLE, // core/callstate.js
      waiting: null, // an incoming call during a call (call waiting)
      remoteStream: null,
      remoteScreen: null, // 1:1: the other person's screen share (a MediaStream) while they share
      localStream: null,
      tiles: [], // group call: [{participant_id, user, video, audio}]
      dominant: null,
      roster: {}, // handle → {user, state} of the current call's participants
      ringingDevices: 0,
      muted: false,
      cameraOff: false,
      sharing: false,
      quality: null,
      contact: null, // the last contact found
      favourites: [],
      history: [],
      missedUnseen: 0,
      devices: [],
      elsewhere: null, // a call this user is in on another device (handoff)
      links: [], // this user's call links: [{id, url, expires_at, call_id}]
      lobby: {}, // guests of this user's links, by id: {id, display_name, state, callId, linkId}
      guest: null, // this page opened a call link without an account: {phase, owner, ...}
      announcement: "", // for the live region
      error: "",
    });
    this.socket = null;
    this.media = null;
    this.controller = null; // DirectCall or GroupCall
    this.ringtone = new Ringtone();
    this.timers = {};
    this.lastStats = null;
    this.early = []; // events that arrived before our invite's result
    this.phases = []; // every phase this tab went through (the call view's history; tests)
    this.tabHandled = new Set(); // calls another tab of this browser answered or declined
    this.e2ee = new E2eeClient(this); // end-to-end keys of every call (e2ee/client.js)
  }

  // -- small helpers -----------------------------------------------------------------
  get state() {
    return this.store.get();
  }

  announce(text) {
    this.store.set({ announcement: text });
  }

  fail(err) {
    const message = err instanceof ApiError || err?.code ? err.message : String(err?.message ?? err);
    this.store.set({ error: message });
    return message;
  }

  dispatch(event) {
    const { state, changed } = transition(this.state.call, event, Date.now());
    if (!changed) return false;
    this.store.set({ call: state });
    if (this.phases.at(-1) !== state.phase) this.phases.push(state.phase);
    this._phaseChanged(state);
    return true;
  }

  _phaseChanged(call) {
    const ringing = call.phase === "ringing" && call.direction === "in";
    if (ringing) this.ringtone.start();
    else this.ringtone.stop();
    if (!ringing && call.direction === "in" && call.callId) ringHandled(call.callId);
    if (call.phase === "in_call") this._startQuality();
    if (call.phase === "ended") {
      this._teardown();
      clearTimeout(this.timers.reset);
      this.timers.reset = setTimeout(() => {
        if (this.state.call === call) {
          this.store.set({ call: IDLE });
          this._phaseChanged(IDLE);
        }
      }, ENDED_LINGER);
      this.refreshHistory();
      this.refreshLinks();
    }
  }

  // -- account ------------------------------------------------------------------------
  async start() {
    if (location.hash.startsWith(JOIN_PREFIX)) return this.guestOpen(decodeURIComponent(location.hash.slice(JOIN_PREFIX.length)));
    const session = loadJson(SESSION_KEY, null);
    if (session?.token) {
      this._signedIn(session);
    }
  }

  async signUp(handle, password, displayName, deviceName) {
    this.store.set({ error: "" });
    try {
      await this.api.signup(handle, password, displayName);
    } catch (err) {
      if (err.code === "handle_taken") throw new ApiError(409, err.code, "That handle is taken: sign in instead, or choose another.");
      throw err;
    }
    return this.signIn(handle, password, deviceName);
  }

  async signIn(handle, password, deviceName) {
    this.store.set({ error: "" });
    let result;
    try {
      result = await this.api.login(handle, password, deviceName || defaultDeviceName(), "browser");
    } catch (err) {
      if (err.code === "bad_credentials") throw new ApiError(401, err.code, "Wrong handle or password. Check both and try again.");
      throw err;
    }
    const session = { token: result.token, user: result.user, device: result.device };
    localStorage.setItem(SESSION_KEY, JSON.stringify(session));
    this._signedIn(session);
  }

  _signedIn(session) {
    this.api.token = session.token;
    this.e2ee.signedIn(session, this.api);
    this.store.set({
      session,
      screen: "home",
      favourites: loadJson(`visavis.favourites.${session.user.handle}`, []),
    });
    this._tabsOpen(session);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    this.socket = new DeviceSocket(`${scheme}//${location.host}/ws`, session.token, {
      onWelcome: (welcome, resumed) => this._welcome(welcome, resumed),
      onEvent: (event) => this._event(event),
      onStatus: (status) => {
        if (status === "online") performance.mark("visavis:online");
        this.store.set({ status });
      },
      onClosed: (code) => this._socketGone(code),
    });
    this.socket.connect();
  }

  async signOut() {
    const session = this.state.session;
    this.hangUp();
    this.socket?.close();
    this.socket = null;
    clearInterval(this.timers.poll);
    if (session) {
      // Signing out revokes this device's token on the server.
      await this.api.revokeDevice(session.device.id).catch(() => {});
    }
    this._forget();
  }

  _forget() {
    localStorage.removeItem(SESSION_KEY);
    this.api.token = null;
    this.store.set({ session: null, screen: "auth", status: "offline", history: [], devices: [], contact: null, call: IDLE, waiting: null });
  }

  _socketGone(code) {
    if (code === CLOSE_REPLACED) {
      this.store.set({ status: "replaced" });
    } else {
      this._forget();
      this.store.set({ error: "This device was signed out. Sign in again." });
    }
  }

  /** Another tab of this browser took the connection: take it back. */
  useHere() {
    const session = this.state.session;
    if (!session) return;
    this.socket?.close();
    this._signedIn(session);
  }

  _welcome(welcome, resumed) {
    clearInterval(this.timers.poll);
    // Calls live on this user's other devices show up in history as ongoing: look again
    // every 10 s while idle (and when the window gets focus) to offer "move call here".
    this.timers.poll = setInterval(() => {
      const phase = this.state.call.phase;
      if ((phase === "idle" || phase === "ended") && document.visibilityState === "visible") this.refreshHistory();
    }, 10000);
    this.iceServers = welcome.ice_servers;
    this.deviceId = welcome.device_id;
    this.refreshHistory();
    this.refreshLinks();
    this.controller?.socketOnline?.();
    this.onOnline?.();
    this.onOnline = null;
    if (!resumed && !this.takingBack && this.state.call.phase === "ringing" && this.state.call.direction === "in") {
      // Events were lost: the server rings again for whatever still rings.
      this.dispatch({ type: "ended", callId: this.state.call.callId, reason: "ended" });
    }
  }

  // -- several tabs of this browser (one device, one connection) -------------------------
  // The server holds one connection per device: the newest tab takes it and the others
  // are "replaced". The tab holding it passes rings on to the others (BroadcastChannel),
  // so every open tab rings; answering in a replaced tab takes the connection back first,
  // and whichever tab answers or declines tells the others to stop.
  _tabsOpen(session) {
    this.tabs?.close();
    this.tabs = typeof BroadcastChannel === "function" ? new BroadcastChannel(`visavis.tabs.${session.device.id}`) : null;
    if (this.tabs) this.tabs.onmessage = (message) => this._fromTab(message.data);
  }

  _fromTab(msg) {
    const call = this.state.call;
    const ringingHere = call.phase === "ringing" && call.direction === "in" && call.callId === msg.callId;
    if (msg.kind === "event" && this.state.status === "replaced") {
      const event = msg.event;
      // (A ring for a call another tab took is the server ringing that tab's fresh connection.)
      if (event.type === "call.incoming") {
        if (!this.tabHandled.has(event.call_id)) this._incoming(event);
      } else if (call.callId === event.call_id && call.phase === "ringing") this.dispatch({ type: "ended", callId: event.call_id, reason: event.reason ?? "ended" });
    } else if (msg.kind === "answered") {
      this.tabHandled.add(msg.callId);
      if (ringingHere) this.dispatch({ type: "stop_ringing", callId: msg.callId, reason: "answered_in_tab" });
    } else if (msg.kind === "declined") {
      this.tabHandled.add(msg.callId);
      if (this.state.status === "online" && !msg.done) this.socket.request({ type: "call.decline", call_id: msg.callId }).catch(() => {});
      if (ringingHere) this.dispatch({ type: "ended", callId: msg.callId, reason: "declined_in_tab" });
    }
  }

  /** This replaced tab takes the device's connection back, and waits until it is up. */
  async _takeBack() {
    this.takingBack = true;
    try {
      const online = new Promise((resolve) => (this.onOnline = resolve));
      this.useHere();
      await online;
    } finally {
      this.takingBack = false;
    }
  }

  // -- server events ------------------------------------------------------------------
  _event(event) {
    if (["call.incoming", "call.stop_ringing", "call.ended"].includes(event.type)) this.tabs?.postMessage({ kind: "event", event });
    const call = this.state.call;
    if (call.phase === "ringing" && call.direction === "out" && call.callId == null && event.call_id && event.type !== "call.incoming") {
      // Our invite's result (with the call id) is still on its way: the server may send
      // call.room or call.ringing first. Keep them until `placed`.
      this.early.push(event);
      return;
    }
    const current = call.callId != null && event.call_id === call.callId;
    switch (event.type) {
      case "call.incoming":
        this._incoming(event);
        break;
      case "call.stop_ringing":
        if (this.state.waiting?.call_id === event.call_id) this.store.set({ waiting: null });
        if (current && call.phase === "ringing") {
          this.dispatch({ type: "stop_ringing", callId: event.call_id, reason: event.reason });
          this.announce(event.reason === "answered_elsewhere" ? "Answered on another device" : "Call ended");
        }
        break;
      case "call.ringing":
        if (current) this.store.set({ ringingDevices: event.devices, roster: { ...this.state.roster, [event.user.handle]: { user: event.user, state: "ringing" } } });
        break;
      case "call.participant":
        if (current) this._participant(event);
        if (current) this.e2ee.event(event);
        break;
      case "call.e2ee":
        if (current) this.e2ee.event(event);
        break;
      case "call.signal":
        if (current && this.controller instanceof DirectCall) {
          if (!this.controller.remoteDevice) this.controller.remoteDevice = event.from_device;
          if (event.from_device === this.controller.remoteDevice) this.controller.handleSignal(event);
        }
        break;
      case "call.room":
        if (current) this._room(event);
        break;
      case "call.guest":
        this._guestEvent(event);
        if (current) this.e2ee.event(event);
        break;
      case "call.room_moved": // the room's SFU node died or is draining (docs/fleet.md)
        if (current && this.controller instanceof GroupCall) this.controller.move(event);
        break;
      case "call.ended":
        if (current) {
          this.dispatch({ type: "ended", callId: event.call_id, reason: event.reason });
          this.announce("Call ended");
        }
        break;
      default:
        if (current) runHook("callEvent", event); // e.g. call.reaction (effects/)
        break;
    }
  }

  _incoming(event) {
    const call = this.state.call;
    // Rung again after a reconnect: already ringing. (A "ring again" after this device
    // declined comes while the ended view lingers: that one rings.)
    if (call.callId === event.call_id && call.phase !== "ended") return;
    if (call.phase === "idle" || call.phase === "ended") {
      this.dispatch({ type: "incoming", callId: event.call_id, peer: event.caller, media: event.media, group: event.group });
      this.store.set({ incoming: event });
    } else {
      this.store.set({ waiting: event });
    }
    this.announce(`Incoming ${event.media} call from ${event.caller.display_name}`);
  }

  _participant(event) {
    const me = this.state.session.user.handle;
    this.store.set({ roster: { ...this.state.roster, [event.user.handle]: { user: event.user, state: event.state } } });
    if (event.user.handle === me) return;
    const controller = this.controller;
    if (event.state === "joined" && event.device_id && controller instanceof DirectCall && !controller.remoteDevice) {
      controller.remoteDevice = event.device_id;
      this.dispatch({ type: "answered", callId: event.call_id });
      controller.release();
    } else if (event.state === "handoff" && event.device_id && controller instanceof DirectCall) {
      // The other person moved to another device: their new device offers.
      controller.remoteDevice = event.device_id;
      controller.peerMoved();
      this.dispatch({ type: "media_lost", callId: event.call_id });
    } else if ((event.state === "declined" || event.state === "missed") && this.state.call.phase === "ringing" && !this.state.call.group) {
      // 1:1: call.ended follows; nothing to do here.
    }
  }

  _room(event) {
    const call = this.state.call;
    if (this.controller instanceof GroupCall) return;
    this.controller?.close();
    this.store.set({ remoteScreen: null });
    this.dispatch({ type: "room", callId: event.call_id });
    const group = new GroupCall({
      callId: event.call_id,
      room: event,
      iceServers: this.iceServers,
      media: this.media,
      onUpdate: () => this._groupUpdate(group),
      onChange: (what, detail) => this._mediaChange(group, what, detail),
      refreshToken: () => this.api.refreshRoom(event.call_id),
      reportLost: (url) => this.socket.request({ type: "call.media_lost", call_id: event.call_id, url }),
    });
    this.controller = group;
    const keys = this.e2ee.begin(event.call_id);
    keys.start();
    Promise.all([this._ensureMedia(call.media === "audio" ? "audio" : "video"), keys.keys]).then(() => {
      if (this.controller === group) group.join();
    });
  }

  _groupUpdate(group) {
    if (this.controller !== group) return;
    this.store.set({ tiles: group.remotes(), dominant: group.dominant });
  }

  _mediaChange(controller, what, detail) {
    if (this.controller !== controller) return;
    const callId = this.state.call.callId;
    if (what === "connected") this.dispatch({ type: "connected", callId });
    else if (what === "media_lost") {
      if (this.dispatch({ type: "media_lost", callId })) this.announce("Reconnecting…");
    } else if (what === "failed") {
      this.fail(new Error(detail || "The call failed."));
      this.hangUp();
    }
  }

  /** Open camera and microphone (once: concurrent callers share the same opening, so a
   * call.room that arrives while the answer's getUserMedia runs opens nothing twice). */
  _ensureMedia(kind) {
    if (!this.media) this.media = new LocalMedia();
    const media = this.media;
    media.opening = (media.opening ?? Promise.resolve()).then(async () => {
      try {
        await media.start({ audio: true, video: kind === "video" });
      } catch (err) {
        this.fail(new Error(`Cannot use the ${kind === "video" ? "camera or microphone" : "microphone"}: ${err.message}. Allow access in the browser and try again.`));
        // A call without local media still receives.
      }
      if (this.media === media) this.store.set({ localStream: media.stream, muted: media.muted, cameraOff: media.cameraOff });
      return media;
    });
    return media.opening;
  }

  // -- calling ------------------------------------------------------------------------
  async findContact(handle) {
    this.store.set({ error: "", contact: null });
    try {
      const contact = await this.api.findUser(handle.trim());
      this.store.set({ contact });
      return contact;
    } catch (err) {
      this.fail(err);
      return null;
    }
  }

  /** Call one person (1:1, peer to peer) or several (group, through the SFU). */
  async call(handles, media = "video", peers = null) {
    handles = Array.isArray(handles) ? handles : [handles];
    const phase = this.state.call.phase;
    if (phase !== "idle" && phase !== "ended") return;
    this.store.set({ error: "", roster: {}, tiles: [], remoteStream: null, remoteScreen: null, ringingDevices: 0, quality: null });
    const peer = peers?.[0] ?? { handle: handles[0], display_name: handles.length > 1 ? `${handles.length} people` : handles[0] };
    const group = handles.length > 1;
    this.early = [];
    this.dispatch({ type: "invite", peer: group ? { handle: handles.join(", "), display_name: handles.map((h) => h.split("@")[0]).join(", ") } : peer, media, group });
    performance.mark("visavis:invite");
    // The camera opens while the invite goes out and the other side rings; the offer is
    // prepared meanwhile without waiting for it (addSender: a transceiver per kind whose
    // track LocalMedia.refresh() sets once the device is open).
    this._ensureMedia(media);
    const local = this.media;
    let result;
    try {
      result = await this.socket.request({ type: "call.invite", handles, media });
    } catch (err) {
      this.fail(err);
      this.dispatch({ type: "ended", reason: "failed" });
      return;
    }
    const callId = result.call_id;
    this.dispatch({ type: "placed", callId });
    const early = this.early;
    this.early = [];
    this.e2ee.begin(callId).start();
    // The callees' identity keys are needed as soon as they answer (their announce):
    // ask for them now, while they ring, rather than then.
    this.e2ee.prefetch(handles);
    if (!group && !(this.controller instanceof GroupCall)) {
      const direct = this._direct(callId, "caller", local);
      // the DTLS certificate whose fingerprint this device signs must exist first
      this.e2ee.ready.then(() => direct.prepareOffer());
    }
    for (const event of early) if (event.call_id === callId) this._event(event);
    return callId;
  }

  _direct(callId, role, media, sends = null) {
    const direct = new DirectCall({
      callId,
      role,
      iceServers: this.iceServers,
      media,
      sends,
      signal: (payload) => this.socket.send({ type: "call.signal", call_id: callId, ...payload }),
      verify: (device, sdp) => this.e2ee.verifyDescription(callId, device, sdp),
      onChange: (what, detail) => this._mediaChange(direct, what, detail),
      onRemote: (stream) => {
        if (this.controller === direct) this.store.set({ remoteStream: stream });
      },
      onScreen: (stream) => {
        if (this.controller !== direct) return;
        if (Boolean(stream) !== Boolean(this.state.remoteScreen)) this.announce(stream ? `${this.state.call.peer?.display_name ?? "They"} started sharing their screen` : "Screen sharing stopped");
        this.store.set({ remoteScreen: stream });
      },
    });
    this.controller = direct;
    return direct;
  }

  /** Answer the ringing call with video or audio only (`end_current`: call waiting). */
  async answer(media = "video") {
    const call = this.state.call;
    if (call.phase !== "ringing" || call.direction !== "in") return;
    this.tabs?.postMessage({ kind: "answered", callId: call.callId });
    if (this.state.status === "replaced") await this._takeBack();
    const incoming = this.state.incoming;
    this.store.set({ error: "", roster: {}, tiles: [], remoteStream: null, remoteScreen: null, quality: null });
    this.dispatch({ type: "answer", callId: call.callId, media });
    performance.mark("visavis:answer");
    // The camera opens while the answer travels and the caller's keys and offer come
    // back: the offer is answered without waiting for it (its tracks join the senders
    // when it is open, DirectCall's `sends`).
    this._ensureMedia(media);
    const local = this.media;
    const keys = this.e2ee.begin(call.callId);
    // (everyone named in the ring: the caller, and in a group the others invited)
    const me = this.state.session?.user?.handle;
    const others = [incoming?.caller?.handle, ...(incoming?.participants ?? []).map((p) => p.user?.handle)];
    this.e2ee.prefetch([...new Set(others.filter((h) => h && h !== me))]);
    await this.e2ee.ready?.catch(() => {});
    if (!incoming?.group) this._direct(call.callId, "callee", local, media === "video" ? ["audio", "video"] : ["audio"]);
    try {
      const answering = this.socket.request({ type: "call.answer", call_id: call.callId, end_current: Boolean(incoming?.call_waiting) });
      // Signaling handles one device's messages in order, so the announce can follow the
      // answer without waiting for its result (if the answer fails, it is refused too).
      keys.start();
      await answering;
      performance.mark("visavis:answered");
    } catch (err) {
      this.fail(err);
      this.dispatch({ type: "ended", callId: call.callId, reason: err.code === "answered_elsewhere" ? "answered_elsewhere" : "failed" });
    }
  }

  decline() {
    const call = this.state.call;
    if (call.phase !== "ringing" || call.direction !== "in") return;
    if (this.state.status === "replaced") this.tabs?.postMessage({ kind: "declined", callId: call.callId });
    else {
      this.socket.request({ type: "call.decline", call_id: call.callId }).catch(() => {});
      this.tabs?.postMessage({ kind: "declined", callId: call.callId, done: true });
    }
    this.dispatch({ type: "ended", callId: call.callId, reason: "local_decline" });
  }

  /** Call waiting: end the current call and answer the waiting one. */
  async endAndAnswer(media = "video") {
    const waiting = this.state.waiting;
    if (!waiting) return;
    this._teardown();
    this.store.set({ waiting: null, call: IDLE, incoming: waiting });
    this.dispatch({ type: "incoming", callId: waiting.call_id, peer: waiting.caller, media: waiting.media, group: waiting.group });
    const call = this.state.call;
    this.store.set({ incoming: { ...waiting, call_waiting: true } });
    if (call.phase === "ringing") await this.answer(media);
  }

  declineWaiting() {
    const waiting = this.state.waiting;
    if (!waiting) return;
    this.socket.request({ type: "call.decline", call_id: waiting.call_id }).catch(() => {});
    this.store.set({ waiting: null });
  }

  /** End the call: cancel if nobody answered yet, leave otherwise. */
  hangUp() {
    if (this.state.guest) return this.guestLeave();
    const call = this.state.call;
    if (call.phase === "idle" || call.phase === "ended") return;
    if (call.phase === "ringing" && call.direction === "in") return this.decline();
    if (call.callId) {
      const type = call.phase === "ringing" ? "call.cancel" : "call.leave";
      this.socket?.request({ type, call_id: call.callId }).catch(() => {});
    }
    this.dispatch({ type: "ended", callId: call.callId, reason: call.phase === "ringing" ? "local_cancel" : "local_hangup" });
  }

  addPerson(handle) {
    const call = this.state.call;
    if (!call.callId) return Promise.resolve();
    return this.socket.request({ type: "call.add", call_id: call.callId, handles: [handle] }).catch((err) => this.fail(err));
  }

  ringAgain(handle) {
    const call = this.state.call;
    if (!call.callId) return Promise.resolve();
    return this.socket.request({ type: "call.ring_again", call_id: call.callId, handle }).catch((err) => this.fail(err));
  }

  toggleMute() {
    if (!this.media) return;
    this.media.setMuted(!this.media.muted);
    this.store.set({ muted: this.media.muted });
    this.announce(this.media.muted ? "Microphone off" : "Microphone on");
  }

  async toggleCamera() {
    if (!this.media) return;
    if (!this.media.video && this.media.cameraOff === false) {
      await this.media.start({ audio: false, video: true }).catch((err) => this.fail(err));
    } else {
      this.media.setCameraOff(!this.media.cameraOff);
    }
    this.store.set({ cameraOff: this.media.cameraOff, localStream: this.media.stream });
    this.announce(this.media.cameraOff ? "Camera off" : "Camera on");
  }

  /** Share a screen or window: a tile of its own for the others (1:1 through the screen
   * slot, group as one more published track), or in place of the camera when the other
   * side's offer has no screen slot. The browser's own "stop sharing" ends it too. */
  async toggleScreenShare() {
    const media = this.media;
    if (!media) return;
    media.onchange = () => {
      if (this.media !== media) return;
      const sharing = Boolean(media.screen);
      this.controller?.setScreen?.(sharing);
      this.store.set({ sharing });
      this.announce(sharing ? "Sharing your screen" : "Stopped sharing");
    };
    try {
      if (media.screen) await media.stopSharing();
      else await media.shareScreen({ asCamera: !this.controller?.canShareTile?.() });
    } catch (err) {
      if (err?.name !== "NotAllowedError") this.fail(err);
    }
  }

  async switchCamera() {
    await this.media?.switchCamera().catch((err) => this.fail(err));
    this.store.set({ localStream: this.media?.stream ?? null });
  }

  /** The group grid's tiles on screen: participant ids shown full, and shown small. */
  setLayout(visibleIds, thumbnailIds = []) {
    if (this.controller instanceof GroupCall) this.controller.setLayout(visibleIds, thumbnailIds);
  }

  /** A key or fingerprint substitution (e2ee/client.js): stop the call, say why. */
  e2eeAlert(warning) {
    this.hangUp();
    this.store.set({ error: warning });
    this.announce(warning);
  }

  _teardown() {
    this.e2ee.end();
    this.ringtone.stop();
    this.controller?.close();
    this.controller = null;
    this.media?.stop();
    this.media = null;
    clearInterval(this.timers.quality);
    this.lastStats = null;
    this.store.set({ remoteStream: null, remoteScreen: null, localStream: null, tiles: [], dominant: null, quality: null, sharing: false });
  }

  _startQuality() {
    clearInterval(this.timers.quality);
    this.timers.quality = setInterval(async () => {
      const stats = await this.controller?.stats?.();
      if (!stats) return;
      const quality = judge(this.lastStats, stats);
      this.lastStats = stats;
      this.store.set({ quality });
    }, 1000);
  }

  /** For tests and the quality view: the current call's getStats() summary. */
  stats() {
    return this.controller?.stats?.() ?? Promise.resolve(null);
  }

  // -- lists ----------------------------------------------------------------------------
  async refreshHistory() {
    if (!this.api.token) return;
    try {
      const history = await this.api.history(50);
      const seen = Number(localStorage.getItem(this._seenKey()) || 0);
      const missedUnseen = history.filter((h) => h.direction === "incoming" && h.state === "missed" && h.started_at > seen).length;
      this.store.set({ history, missedUnseen, elsewhere: this._liveElsewhere(history) });
    } catch (err) {
      if (err.status === 401) this._forget();
    }
  }

  /** A call this user is in on another device (history says ongoing, and I joined). */
  _liveElsewhere(history) {
    const me = this.state.session?.user.handle;
    const phase = this.state.call.phase;
    if (phase !== "idle" && phase !== "ended") return null;
    return (
      history.find((h) => h.state === "ongoing" && h.participants.some((p) => p.user.handle === me && p.state === "joined")) ?? null
    );
  }

  /** Handoff: move the call this user is in on another device to this one. */
  async moveCallHere() {
    const entry = this.state.elsewhere;
    if (!entry) return;
    const me = this.state.session.user.handle;
    const others = entry.participants.filter((p) => p.user.handle !== me).map((p) => p.user);
    const group = others.length > 1;
    const role = entry.direction === "outgoing" ? "caller" : "callee";
    this.store.set({ elsewhere: null, error: "", roster: {}, tiles: [], remoteStream: null, remoteScreen: null, quality: null });
    this.dispatch({
      type: "take_over",
      callId: entry.call_id,
      direction: entry.direction === "outgoing" ? "out" : "in",
      peer: group ? { handle: others.map((u) => u.handle).join(", "), display_name: others.map((u) => u.display_name).join(", ") } : others[0],
      media: entry.media,
      group,
    });
    const local = await this._ensureMedia(entry.media);
    // A 1:1 call: this device offers to the other side as soon as the server agrees; a
    // group call: the server sends call.room to this device.
    const keys = this.e2ee.begin(entry.call_id);
    await this.e2ee.ready?.catch(() => {});
    const direct = group ? null : this._direct(entry.call_id, role, local);
    try {
      await this.socket.request({ type: "call.handoff", call_id: entry.call_id });
      keys.start();
    } catch (err) {
      this.fail(err);
      this.dispatch({ type: "ended", callId: entry.call_id, reason: "failed" });
      return;
    }
    if (direct && this.controller === direct) {
      direct.release();
      direct.prepareOffer();
    }
  }

  _seenKey() {
    return `visavis.history-seen.${this.state.session?.user.handle}`;
  }

  markHistorySeen() {
    const newest = this.state.history[0]?.started_at ?? 0;
    localStorage.setItem(this._seenKey(), String(newest));
    this.store.set({ missedUnseen: 0 });
  }

  async refreshDevices() {
    try {
      this.store.set({ devices: await this.api.devices() });
    } catch (err) {
      this.fail(err);
    }
  }

  async revokeDevice(id) {
    try {
      await this.api.revokeDevice(id);
      await this.refreshDevices();
      this.announce("Device signed out");
    } catch (err) {
      this.fail(err);
    }
  }

  /** Ring this device with the app closed (Web Push through the service worker). */
  async enablePush() {
    try {
      await enablePush(this.api);
      this.store.set({ pushEnabled: true });
      this.announce("This device will ring with visavis closed");
    } catch (err) {
      this.fail(err);
    }
  }

  toggleFavourite(contact) {
    const handle = contact.handle;
    const list = this.state.favourites;
    const next = list.some((f) => f.handle === handle) ? list.filter((f) => f.handle !== handle) : [...list, { handle, display_name: contact.display_name }];
    localStorage.setItem(`visavis.favourites.${this.state.session.user.handle}`, JSON.stringify(next));
    this.store.set({ favourites: next });
  }

  // -- call links: the owner's side ------------------------------------------------------
  _linkTokensKey() {
    return `visavis.links.${this.state.session?.user.handle}`;
  }

  /** This user's usable links; the URL is known where the link was made (the server
   * keeps only a hash of its token). */
  async refreshLinks() {
    if (!this.api.token) return;
    try {
      const tokens = loadJson(this._linkTokensKey(), {});
      const links = (await this.api.links()).map((l) => ({ ...l, url: tokens[l.id] ? `${location.origin}/${JOIN_PREFIX}${tokens[l.id]}` : null }));
      this.store.set({ links });
    } catch (err) {
      if (err.status === 401) this._forget();
    }
  }

  async createLink() {
    try {
      const link = await this.api.createLink("video");
      const tokens = loadJson(this._linkTokensKey(), {});
      localStorage.setItem(this._linkTokensKey(), JSON.stringify({ ...tokens, [link.id]: link.token }));
      await this.refreshLinks();
      this.announce("Call link made: share it with the people you want to call");
    } catch (err) {
      this.fail(err);
    }
  }

  async revokeLink(id) {
    try {
      await this.api.revokeLink(id);
      const tokens = loadJson(this._linkTokensKey(), {});
      delete tokens[id];
      localStorage.setItem(this._linkTokensKey(), JSON.stringify(tokens));
      await this.refreshLinks();
      this.announce("Call link turned off");
    } catch (err) {
      this.fail(err);
    }
  }

  /** Open a link's call on this device (started by the first one to open it). */
  async openLink(id) {
    const phase = this.state.call.phase;
    if (phase !== "idle" && phase !== "ended") return;
    this.store.set({ error: "", roster: {}, tiles: [], remoteStream: null, remoteScreen: null, ringingDevices: 0, quality: null });
    this.early = [];
    this.dispatch({ type: "invite", peer: { handle: "", display_name: "Call link" }, media: "video", group: true });
    await this._ensureMedia("video");
    let result;
    try {
      result = await this.socket.request({ type: "call.link_join", link_id: id });
    } catch (err) {
      this.fail(err);
      this.dispatch({ type: "ended", reason: "failed" });
      return;
    }
    this.dispatch({ type: "placed", callId: result.call_id });
    const early = this.early;
    this.early = [];
    for (const event of early) if (event.call_id === result.call_id) this._event(event);
    this.refreshLinks();
  }

  _guestEvent(event) {
    const g = event.guest;
    this.store.set({ lobby: { ...this.state.lobby, [g.id]: { ...g, state: event.state, callId: event.call_id ?? null, linkId: event.link_id } } });
    if (event.state === "waiting") this.announce(`${g.display_name} is waiting to join your call`);
  }

  /** Let a guest waiting in the lobby in (or not). */
  admitGuest(id, admit = true) {
    const callId = this.state.call.callId;
    if (!callId) return Promise.resolve();
    return this.socket.request({ type: admit ? "call.admit" : "call.refuse", call_id: callId, guest_id: id }).catch((err) => this.fail(err));
  }

  // -- call links: the guest's side (no account) ------------------------------------------
  _setGuest(patch) {
    this.store.set({ guest: { ...this.state.guest, ...patch } });
  }

  async guestOpen(token) {
    this.guestApi = new Api();
    this.store.set({ guest: { token, phase: "loading" } });
    try {
      const info = await this.guestApi.linkInfo(token);
      this._setGuest({ phase: "form", owner: info.owner, media: info.media });
    } catch (err) {
      this._setGuest({ phase: "gone", error: linkError(err) });
    }
  }

  async guestJoin(name) {
    try {
      const out = await this.guestApi.arrive(this.state.guest.token, name);
      this.guestApi.token = out.token;
      this._setGuest({ phase: "waiting", name: out.guest.display_name, id: out.guest.id, error: "" });
      this.announce("Waiting for someone in the call to let you in");
      this._guestPoll();
    } catch (err) {
      this._setGuest({ phase: err.status === 410 || err.status === 404 ? "gone" : "form", error: linkError(err) });
    }
  }

  /** The lobby, and once in: whether the call goes on (polled; bounded by the page). */
  _guestPoll() {
    clearTimeout(this.timers.guest);
    this.timers.guest = setTimeout(async () => {
      let status;
      try {
        status = await this.guestApi.guestStatus();
      } catch (err) {
        if (err.status === 410 || err.status === 401) return this._guestOver("gone", linkError(err));
        return this._guestPoll(); // the network blinked: ask again
      }
      if (status.state === "waiting") return this._guestPoll();
      if (status.state === "admitted") {
        if (!this.controller) await this._guestEnter(status);
        return this._guestPoll();
      }
      this._guestOver(status.state === "refused" ? "refused" : "ended");
    }, GUEST_POLL_MS);
  }

  async _guestEnter(status) {
    const room = status.room;
    this.iceServers = status.ice_servers;
    this.store.set({ error: "", tiles: [], quality: null });
    this.dispatch({ type: "take_over", callId: room.call_id, direction: "in", peer: status.owner, media: status.media, group: true });
    this._setGuest({ phase: "in_call" });
    const media = await this._ensureMedia(status.media === "audio" ? "audio" : "video");
    // an ephemeral identity and key messages over /api/guest/e2ee (e2ee/client.js)
    // (and the call's reactions, from the same mailbox: effects/client.js)
    const keys = this.e2ee.guestBegin(room.call_id, this.guestApi, this.state.guest.id, (event) => {
      if (event.call_id === this.state.call.callId) runHook("callEvent", event);
    });
    keys.start();
    await keys.keys;
    const group = new GroupCall({
      callId: room.call_id,
      room,
      iceServers: status.ice_servers,
      media,
      onUpdate: () => this._groupUpdate(group),
      onChange: (what, detail) => this._mediaChange(group, what, detail),
      onLeft: (p) => keys.onDeviceLeft(p.device).catch((err) => console.error("visavis e2ee", err)),
      refreshToken: async () => {
        const fresh = await this.guestApi.guestStatus();
        if (!fresh.room) throw new Error("The call has ended.");
        return fresh.room;
      },
    });
    this.controller = group;
    group.join();
  }

  _guestOver(phase, error = "") {
    clearTimeout(this.timers.guest);
    const call = this.state.call;
    if (call.phase !== "idle" && call.phase !== "ended") this.dispatch({ type: "ended", callId: call.callId, reason: "ended" });
    this._setGuest({ phase, error });
  }

  guestLeave() {
    this.guestApi?.guestLeave().catch(() => {});
    const call = this.state.call;
    if (call.phase !== "idle" && call.phase !== "ended") this.dispatch({ type: "ended", callId: call.callId, reason: "local_hangup" });
    clearTimeout(this.timers.guest);
    this._setGuest({ phase: "left" });
  }

  go(screen, tab) {
    this.store.set({ screen, ...(tab ? { tab } : {}), error: "" });
    if (screen === "devices") this.refreshDevices();
    if (tab === "history") this.markHistorySeen();
  }
}
