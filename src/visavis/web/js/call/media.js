// This device's camera and microphone, and THE place where a local track goes out.
//
// LocalMedia holds the raw capture tracks. `outgoing(kind)` is what every sender sends:
// the raw track passed through the `localTrack` hooks (core/hooks.js), so effects can
// swap in a processed track. After an effect changes, call `refresh()`: every sender
// registered with `attach` gets the new track through replaceTrack (no renegotiation).
// A screen share is a third kind, "screen" (no hooks: effects are for the camera): its
// own sender beside the camera's, or, for a peer whose offer has no screen slot, in place
// of the camera (`shareScreen({asCamera: true})`).

import { hooks, settings } from "../core/hooks.js";

const PREFS_KEY = "visavis.media";

// The camera's best up to 1080p (the browser picks the closest the camera offers); a
// person may cap it per device (Settings → camera quality: 1080, 720 or 360 lines).
export const QUALITIES = [1080, 720, 360];

export function cameraConstraints(maxHeight = loadPrefs().maxHeight ?? 1080) {
  const height = QUALITIES.includes(maxHeight) ? maxHeight : 1080;
  const width = Math.round((height * 16) / 9);
  return { width: { ideal: width, max: width }, height: { ideal: height, max: height }, frameRate: { ideal: 30, max: 30 } };
}

export function loadPrefs() {
  try {
    return JSON.parse(localStorage.getItem(PREFS_KEY) || "{}");
  } catch {
    return {};
  }
}

export function savePrefs(prefs) {
  localStorage.setItem(PREFS_KEY, JSON.stringify({ ...loadPrefs(), ...prefs }));
}

export class LocalMedia {
  constructor() {
    this.stream = new MediaStream(); // raw capture, for the self view
    this.out = { audio: null, video: null, screen: null }; // what goes out, after the hooks
    this.screen = null; // the screen share's track, while sharing
    this.screenAsCamera = false; // the share goes out on the camera's sender
    this.senders = new Set();
    this.muted = false;
    this.cameraOff = false;
    this.facing = "user";
  }

  get audio() {
    return this.stream.getAudioTracks()[0] ?? null;
  }
  get video() {
    return this.stream.getVideoTracks()[0] ?? null;
  }

  /** Open camera and/or microphone (the devices chosen in settings, remembered per device). */
  async start({ audio = true, video = true } = {}) {
    const prefs = loadPrefs();
    // The chosen devices exactly (Chromium treats an `ideal` microphone as a hint and
    // takes the default); if one is gone (unplugged), the system's default instead.
    const want = (chosen) => ({
      audio: audio && !this.audio ? { ...settings.audioConstraints, ...(chosen && prefs.mic ? { deviceId: { exact: prefs.mic } } : {}) } : false,
      video: video && !this.video ? { ...cameraConstraints(prefs.maxHeight), ...(chosen && prefs.camera ? { deviceId: { exact: prefs.camera } } : { facingMode: this.facing }) } : false,
    });
    const wanted = want(true);
    if (wanted.audio || wanted.video) {
      let got;
      try {
        got = await navigator.mediaDevices.getUserMedia(wanted);
      } catch (err) {
        if (err?.name !== "OverconstrainedError" && err?.name !== "NotFoundError") throw err;
        got = await navigator.mediaDevices.getUserMedia(want(false));
      }
      if (this.stopped) {
        // the call ended while the devices opened: release them at once
        for (const track of got.getTracks()) track.stop();
        return this.stream;
      }
      for (const track of got.getTracks()) this.stream.addTrack(track);
    }
    if (this.audio) this.audio.enabled = !this.muted;
    if (this.video) this.video.enabled = !this.cameraOff;
    await this.refresh();
    return this.stream;
  }

  /** Recompute the outgoing tracks through the localTrack hooks; update every sender. */
  async refresh() {
    this.out.screen = this.screenAsCamera ? null : this.screen;
    for (const kind of ["audio", "video"]) {
      let track = kind === "video" && this.screen && this.screenAsCamera ? this.screen : this[kind];
      for (const fn of hooks.localTrack) {
        try {
          track = (await fn(track, kind)) ?? track;
        } catch (err) {
          console.error("visavis localTrack hook failed", err);
        }
      }
      this.out[kind] = track;
    }
    for (const sender of this.senders) {
      const kind = sender.__visavisKind;
      if (sender.track !== this.out[kind]) await sender.replaceTrack(this.out[kind]).catch(() => {});
    }
  }

  outgoing(kind) {
    return this.out[kind];
  }

  /** Keep `sender` sending the current outgoing track of `kind`. */
  attach(sender, kind) {
    sender.__visavisKind = kind;
    this.senders.add(sender);
  }

  detach(sender) {
    this.senders.delete(sender);
  }

  setMuted(muted) {
    this.muted = muted;
    if (this.audio) this.audio.enabled = !muted;
  }

  setCameraOff(off) {
    this.cameraOff = off;
    if (this.video) this.video.enabled = !off;
  }

  /** Share a screen or window: on the "screen" senders (a tile of its own at the other
   * side), or `asCamera` in place of the camera (same sender: no renegotiation). The
   * browser's own "stop sharing" ends the track, which stops the share here too. */
  async shareScreen({ asCamera = false } = {}) {
    const got = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
    const track = got.getVideoTracks()[0];
    track.contentHint = "detail";
    this.screen = track;
    this.screenAsCamera = asCamera;
    track.addEventListener("ended", () => this.stopSharing());
    await this.refresh();
    this.onchange?.();
  }

  async stopSharing() {
    if (!this.screen) return;
    this.screen.stop();
    this.screen = null;
    this.screenAsCamera = false;
    await this.refresh();
    this.onchange?.();
  }

  /** Next camera (front/back on phones, or the next one listed). */
  async switchCamera() {
    const cameras = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "videoinput");
    const current = this.video?.getSettings().deviceId;
    const index = cameras.findIndex((d) => d.deviceId === current);
    const next = cameras.length > 1 ? cameras[(index + 1) % cameras.length] : null;
    this.facing = this.facing === "user" ? "environment" : "user";
    const constraints = next ? { ...cameraConstraints(), deviceId: { exact: next.deviceId } } : { ...cameraConstraints(), facingMode: this.facing };
    const got = await navigator.mediaDevices.getUserMedia({ video: constraints });
    const old = this.video;
    if (old) {
      this.stream.removeTrack(old);
      old.stop();
    }
    const track = got.getVideoTracks()[0];
    track.enabled = !this.cameraOff;
    this.stream.addTrack(track);
    if (next) savePrefs({ camera: next.deviceId });
    await this.refresh();
  }

  stop() {
    this.stopped = true;
    this.screen?.stop();
    this.screen = null;
    for (const track of this.stream.getTracks()) {
      track.stop();
      this.stream.removeTrack(track);
    }
    this.senders.clear();
    this.out = { audio: null, video: null, screen: null };
  }
}
