// The effects inside the web client: installs them through js/core/hooks.js and holds the
// person's choices. main.js calls installEffects(app) once; views render <EffectsControls>
// (controls.js) in the call and <EffectsSettings> before one.
//
//   camera      localTrack hook: the camera track goes out through createVideoEffect when
//               blur or portrait is on (the raw track when off: no cost)
//   microphone  localTrack hook: through RNNoise when voice isolation is on (the default);
//               the microphone is opened without the browser's own noise suppression then,
//               and reopened with it when the person turns ours off (Chromium cannot change
//               it on a live track)
//   reactions   1:1: peerConnection hook, a negotiated data channel on every connection;
//               group: sealed with the call's end-to-end keys (app.e2ee.seal/open, the
//               sender's current SFrame key) and relayed by signaling (call.reaction,
//               callEvent hook; a call link's guest sends with POST /api/guest/reaction and
//               receives from its mailbox poll);
//               Alt+1…8 and the menu send, the sender's tile plays
//   spatial     group calls with two or more others: remote voices through the mixer,
//               placed by their tiles; the grid's <audio> elements are muted meanwhile

import { on, settings } from "../js/core/hooks.js";
import { createVideoEffect, VIDEO_MODES } from "./video.js";
import { createVoiceIsolation, micConstraints, SAMPLE_RATE } from "./voice.js";
import { createSpatialMixer } from "./spatial.js";
import {
  createReactions,
  reactionChannel,
  reactionShortcut,
  ReactionError,
  REACTIONS,
} from "./reactions.js";
import { playReaction } from "./reaction-animations.js";

const PREFS_KEY = "visavis.effects";
const DEFAULTS = { video: "off", voiceIsolation: true, spatial: true, headphones: false };
const SELF = "self";
const PEER = "peer";

function loadPrefs() {
  try {
    return { ...DEFAULTS, ...JSON.parse(localStorage.getItem(PREFS_KEY) || "{}") };
  } catch {
    return { ...DEFAULTS };
  }
}

export class Effects {
  constructor(app) {
    this.app = app;
    this.prefs = loadPrefs();
    this.video = null; // {raw, effect, out}
    this.voice = null; // {raw, isolation}
    this.reactions = null;
    this.channel = null;
    this.group = null; // {callId, selfId}: the group call whose reactions run
    this.audioContext = null;
    this.mixer = null;
    this.stopFollowing = null;
    this.note = ""; // what the video effect last said (lowered resolution, errors)
    this.notice = ""; // an effect gave up: why, shown until dismissed or changed
    this.gaveUp = null; // the video effect's figures when it last gave up
    this.played = []; // the last reactions played here: {who, kind, on: the tile's class}
    this.listeners = new Set();
    settings.audioConstraints = micConstraints(this.prefs.voiceIsolation);
  }

  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  changed() {
    localStorage.setItem(PREFS_KEY, JSON.stringify(this.prefs));
    for (const fn of this.listeners) fn(this);
  }

  // -- camera -------------------------------------------------------------------------
  async videoTrack(track) {
    if (!track || this.prefs.video === "off") return track;
    if (this.video?.raw !== track) {
      this.video?.effect.close();
      const effect = createVideoEffect({ mode: this.prefs.video });
      effect.addEventListener("status", ({ detail }) => {
        this.note = detail.note;
        if (detail.gaveUp && this.video?.effect === effect) {
          // It cannot run here (no WebGL, the model failed, far too slow): the camera's
          // own track goes out again, the toggle goes back to Off, and the person is told
          // why (tell). Switching it on again tries again.
          this.gaveUp = { ...detail, recentMs: undefined };
          this.prefs.video = "off";
          this.video = null;
          this.tell(detail.note);
          this.app.media?.refresh().then(() => effect.close());
          return;
        }
        this.app.announce?.(detail.note);
        this.changed();
      });
      this.video = { raw: track, effect, out: effect.process(track) };
    } else {
      this.video.effect.setMode(this.prefs.video);
    }
    return this.video.out;
  }

  async setVideoMode(mode) {
    if (!VIDEO_MODES.includes(mode)) throw new Error(`unknown video effect: ${mode}`);
    this.prefs.video = mode;
    this.notice = "";
    this.video?.effect.setMode(mode);
    this.changed();
    await this.app.media?.refresh();
    if (mode === "off" && this.video) {
      // the raw camera goes out again: stop the pipeline and the model (no cost when off)
      this.video.effect.close();
      this.video = null;
    }
  }

  // -- microphone ---------------------------------------------------------------------
  /** The microphone's outgoing track. RNNoise loads in the background (a wasm module and
   *  a worklet: seconds on a slow device), so the raw track goes out meanwhile and the
   *  isolated one replaces it when ready: answering a call never waits for the model. */
  audioTrack(track) {
    if (!track || !this.prefs.voiceIsolation) return track;
    if (this.voice?.raw === track) return this.voice.isolation?.track ?? track;
    this.voice?.isolation?.close();
    const voice = { raw: track, isolation: null };
    this.voice = voice;
    createVoiceIsolation(track).then(
      (isolation) => {
        if (this.voice !== voice || track.readyState === "ended") return isolation.close();
        voice.isolation = isolation;
        this.changed();
        return this.app.media?.refresh();
      },
      (error) => {
        // The microphone was opened without the browser's own suppression (ours was to
        // replace it): ask for it back, so the raw track does not go out with neither.
        if (this.voice === voice && track.readyState !== "ended") {
          track.applyConstraints({ ...track.getConstraints(), noiseSuppression: true }).catch(() => {});
        }
        this.tell(`voice isolation unavailable: ${error.message ?? error}`);
      },
    );
    return track;
  }

  setVoiceIsolation(on) {
    this.prefs.voiceIsolation = Boolean(on);
    settings.audioConstraints = micConstraints(this.prefs.voiceIsolation);
    this.changed();
    // One microphone switch at a time: while one reopens the microphone there is no raw
    // track, so a toggle meanwhile (a double click) would send nothing and could leave the
    // microphone opened for the wrong choice. Each switch applies the latest choice.
    const apply = () => this.applyVoiceIsolation();
    this.voiceSwitch = (this.voiceSwitch ?? Promise.resolve()).then(apply, apply);
    return this.voiceSwitch;
  }

  async applyVoiceIsolation() {
    const media = this.app.media;
    const old = media?.audio;
    if (old && old.getSettings().noiseSuppression !== !this.prefs.voiceIsolation) {
      // Reopen the microphone with (or without) the browser's own suppression. The old
      // track goes first: while it lives, Chromium hands out the same capture, with the
      // processing it was opened with (checked here: noiseSuppression stayed false). It
      // stays in the stream, stopped (silent), until the fresh one takes its place, so a
      // refresh meanwhile never hands the senders null.
      const deviceId = old.getSettings().deviceId;
      old.stop();
      const got = await navigator.mediaDevices.getUserMedia({
        audio: { ...settings.audioConstraints, ...(deviceId ? { deviceId: { exact: deviceId } } : {}) },
      });
      const fresh = got.getAudioTracks()[0];
      fresh.enabled = !media.muted;
      media.stream.removeTrack(old);
      media.stream.addTrack(fresh);
    }
    if (!this.prefs.voiceIsolation) {
      this.voice?.isolation?.close();
      this.voice = null;
    }
    await media?.refresh();
  }

  // -- reactions ----------------------------------------------------------------------
  directConnection(pc) {
    const channel = reactionChannel(pc);
    this.channel = channel;
    this.group = null;
    this.reactions = createReactions({
      selfId: SELF,
      send: (bytes) => {
        if (channel.readyState === "open") channel.send(bytes);
      },
      onReaction: (who, kind) => this.play(who, kind),
    });
    const reactions = this.reactions;
    channel.addEventListener("message", ({ data }) => reactions.receive(data, PEER));
    this.changed();
  }

  /** Group calls: reactions sealed with the call's end-to-end keys, through signaling.
   *  Runs while the call has an SFU participant id and the client its E2EE layer. */
  updateGroupReactions(s) {
    const group = s.call?.group ? this.app.controller : null;
    const selfId = group?.participantId ?? null;
    const callId = s.call?.callId ?? null;
    const g = this.group;
    if (g && g.callId === callId && g.selfId === selfId) return;
    if (!selfId || !callId || !this.app.e2ee) {
      if (g) {
        this.group = null;
        this.reactions = null;
        this.changed();
      }
      return;
    }
    this.group = { callId, selfId };
    this.channel = null;
    this.reactions = createReactions({
      selfId,
      cipher: e2eeCipher(this.app.e2ee),
      send: (bytes) =>
        this.sendGroup(callId, base64url(bytes)).catch((error) =>
          this.say(`reaction not sent: ${error.message ?? error}`),
        ),
      onReaction: (who, kind) => this.play(who === selfId ? SELF : who, kind),
    });
    this.changed();
  }

  /** A device relays through its socket; a guest of a call link, which has none, through
   *  POST /api/guest/reaction (and reads the others' from its mailbox, the e2ee poll). */
  sendGroup(callId, payload) {
    const guest = this.app.state.guest?.phase === "in_call" ? this.app.guestApi : null;
    if (guest) return guest.request("POST", "/api/guest/reaction", { call_id: callId, payload });
    return this.app.socket?.request({ type: "call.reaction", call_id: callId, payload }) ?? Promise.resolve();
  }

  say(note) {
    this.note = note;
    this.changed();
  }

  /** An effect gave up: say why in the panel, in a notice the person sees without opening
   *  it (controls.js), and in the client's live region. */
  tell(note) {
    this.note = note;
    this.notice = note;
    this.app.announce?.(note);
    this.changed();
  }

  dismissNotice() {
    this.notice = "";
    this.changed();
  }

  callEvent(event) {
    if (event.type !== "call.reaction" || !this.group || event.call_id !== this.group.callId) return;
    let bytes;
    try {
      bytes = fromBase64url(event.payload);
    } catch {
      bytes = new Uint8Array(); // counted as malformed by receive()
    }
    this.reactions.receive(bytes, `${event.from_user}/${event.from_device}`);
  }

  /** The element a participant's reaction plays over: the self view, the other person's
   *  video (1:1) or their tile (group). */
  tileOf(who) {
    const root = document.querySelector("main.call") ?? document;
    if (who === SELF) return root.querySelector(".self") ?? root.querySelector(".stage");
    if (who === PEER) return root.querySelector(".remote") ?? root.querySelector(".stage");
    return root.querySelector(`[data-participant="${CSS.escape(who)}"]`);
  }

  play(who, kind) {
    const tile = this.tileOf(who);
    const label = REACTIONS.find((r) => r.kind === kind)?.label ?? kind;
    const tileInfo = this.app.state.tiles?.find((t) => t.participant_id === who);
    const name =
      who === SELF ? "You" : (tileInfo?.user ?? this.app.state.call?.peer?.display_name ?? "They");
    this.app.announce?.(`${name} sent ${label.toLowerCase()}`);
    this.played.push({ who, kind, on: tile?.getAttribute("class") ?? null });
    if (this.played.length > 20) this.played.shift();
    if (tile) playReaction(tile, kind);
  }

  get canReact() {
    return Boolean(this.reactions && (this.group || this.channel?.readyState === "open"));
  }

  react(kind) {
    if (!this.canReact) return Promise.resolve(false);
    return this.reactions.react(kind).catch((error) => {
      // e.g. the call's end-to-end keys are not there yet (a moment after joining)
      this.say(`reaction not sent: ${error.message ?? error}`);
      return false;
    });
  }

  onKey(event) {
    const kind = reactionShortcut(event);
    if (!kind || !this.canReact) return;
    event.preventDefault();
    this.react(kind);
  }

  // -- spatial audio ------------------------------------------------------------------
  setSpatial(on) {
    this.prefs.spatial = Boolean(on);
    this.changed();
    this.updateSpatial(this.app.state);
  }

  setHeadphones(on) {
    this.prefs.headphones = Boolean(on);
    this.mixer?.setHeadphones(this.prefs.headphones);
    this.changed();
  }

  /** After every state change: group calls with 2+ others play through the mixer. */
  updateSpatial(s) {
    const tiles = s.call?.group ? s.tiles.filter((t) => t.audio) : [];
    const active = this.prefs.spatial && tiles.length >= 2;
    if (!active) {
      if (this.mixer) this.stopSpatial();
      return;
    }
    if (!this.mixer) {
      this.audioContext = new AudioContext({ sampleRate: SAMPLE_RATE });
      this.mixer = createSpatialMixer(this.audioContext, { headphones: this.prefs.headphones });
    }
    const ids = new Set(tiles.map((t) => t.participant_id));
    for (const id of Object.keys(this.mixer.positions())) if (!ids.has(id)) this.mixer.remove(id);
    for (const t of tiles) {
      if (this.mixer.media(t.participant_id) !== t.audio) this.mixer.add(t.participant_id, t.audio);
    }
    const grid = document.querySelector("main.call .grid");
    if (grid && this.grid !== grid) {
      this.stopFollowing?.();
      this.stopFollowing = this.mixer.followTiles(grid);
      this.grid = grid;
    }
    this.muteGridAudio(true);
  }

  muteGridAudio(muted) {
    for (const el of document.querySelectorAll("main.call .grid audio")) el.muted = muted;
  }

  stopSpatial() {
    this.muteGridAudio(false);
    this.stopFollowing?.();
    this.stopFollowing = null;
    this.grid = null;
    this.mixer.close();
    this.mixer = null;
    this.audioContext.close();
    this.audioContext = null;
  }

  get spatialActive() {
    return Boolean(this.mixer);
  }
}

/** Reactions' cipher in group calls: the call's E2EE layer (web/README.md). It seals with
 *  this device's current sender key and opens with the key of the device named in the
 *  participant id ("<handle>/<device id>"), refusing a message that key did not seal. */
function e2eeCipher(e2ee) {
  return {
    seal: (plain) => e2ee.seal(plain),
    async open(bytes, participantId) {
      try {
        return await e2ee.open(participantId.slice(participantId.lastIndexOf("/") + 1), bytes);
      } catch (error) {
        const reason =
          error.reason === "replay"
            ? "duplicate"
            : error.reason === "unknown_kid" || error.reason === "wrong_sender"
              ? "key"
              : "decrypt";
        throw new ReactionError(reason, `${error.reason ?? ""} ${error.message}`);
      }
    },
  };
}

function base64url(bytes) {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function fromBase64url(text) {
  const binary = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

/** Install the effects into `app` (once, from main.js). */
export function installEffects(app) {
  const effects = new Effects(app);
  const style = document.createElement("link");
  style.rel = "stylesheet";
  style.href = new URL("effects.css", import.meta.url).href;
  document.head.append(style);
  on("localTrack", (track, kind) =>
    kind === "video" ? effects.videoTrack(track) : effects.audioTrack(track),
  );
  on("peerConnection", (pc, info) => {
    if (info.purpose === "direct") effects.directConnection(pc);
  });
  on("callEvent", (event) => effects.callEvent(event));
  addEventListener("keydown", (event) => effects.onKey(event));
  // after the views have rendered the change (they re-render asynchronously)
  app.store.subscribe(() =>
    setTimeout(() => {
      effects.updateSpatial(app.state);
      effects.updateGroupReactions(app.state);
    }),
  );
  app.effects = effects;
  return effects;
}
