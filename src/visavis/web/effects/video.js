// Background blur and portrait on the sender's device.
//
//   const effect = createVideoEffect({ mode: "blur" });
//   const sent = effect.process(cameraTrack);   // send this track instead of the camera's
//   effect.setMode("portrait" | "blur" | "off"); // at any time, before or during a call
//   effect.stats                                 // fps, ms per frame, effect resolution, note
//   effect.addEventListener("status", ...)       // the effect changed its resolution
//   effect.close()
//
// Each camera frame is segmented by MediaPipe's selfie model; the background is blurred at
// the effect's own resolution (a fraction of the camera's) and scaled back up, the person
// is kept at full resolution through the (feathered) mask. When the device cannot keep up
// with the camera's frame rate, the effect lowers its own resolution step by step instead
// of dropping frames, and says so in `stats.note` and a "status" event. Frames come from
// MediaStreamTrackProcessor/Generator where the browser has them (Chromium) and from a
// <video> drawn to a canvas whose captureStream() is sent elsewhere (Firefox, Safari).

import { createSegmenter } from "./segmenter.js";

export const VIDEO_MODES = ["off", "blur", "portrait"];

/** Per mode: blur radius (px at camera resolution), mask feather (px at effect resolution),
 *  background brightness. Portrait blurs less and feathers the person's edge widely, so
 *  sharpness falls off gradually like a lens's depth of field, and dims the background. */
const LOOKS = {
  blur: { radius: 16, feather: 1.5, brightness: 1 },
  portrait: { radius: 7, feather: 5, brightness: 0.85 },
};

/** The effect's own resolution, from best to cheapest: its spatial scale (a fraction of the
 *  camera's resolution, or of 640 pixels across for larger cameras) and, past the smallest scale, how often the person's mask is
 *  recomputed (every 2nd or 3rd frame reuses the last mask; the background is still blurred
 *  on every frame). The camera's frame rate is never lowered. */
export const EFFECT_LEVELS = [
  { scale: 1, maskEvery: 1 },
  { scale: 0.75, maskEvery: 1 },
  { scale: 0.5, maskEvery: 1 },
  { scale: 0.375, maskEvery: 1 },
  { scale: 0.25, maskEvery: 1 },
  { scale: 0.25, maskEvery: 2 },
  { scale: 0.25, maskEvery: 3 },
];
const START_LEVEL = 2; // 320×240 for a 640×480 camera: above the model's own 256×144 input
const REFERENCE_WIDTH = 640;
const ADAPT_EVERY = 30; // frames between resolution decisions
const WARM_UP = 5; // frames left out of the cost average
const GIVE_UP_MS = 1500; // one frame slower than this: the effect switches itself off

/** Resolve after the tasks already queued on the main thread have had their turn. */
function yieldToPage() {
  if (globalThis.scheduler?.yield) return globalThis.scheduler.yield();
  return new Promise((resolve) => setTimeout(resolve, 0));
}

function canvas(width, height) {
  if (typeof OffscreenCanvas !== "undefined") return new OffscreenCanvas(width, height);
  const element = document.createElement("canvas");
  element.width = width;
  element.height = height;
  return element;
}

function resize(target, width, height) {
  if (target.width !== width) target.width = width;
  if (target.height !== height) target.height = height;
}

/**
 * A video effect for one camera track. Options: `mode` ("off", "blur", "portrait"),
 * `backend` ("auto", "insertable-streams", "canvas"), `level` (start index into
 * EFFECT_LEVELS), `adapt` (false pins the resolution, for measurements), `giveUpMs` (a
 * frame slower than this turns the effect off; Infinity never does).
 */
export function createVideoEffect({
  mode = "off",
  backend = "auto",
  level = START_LEVEL,
  adapt = true,
  giveUpMs = GIVE_UP_MS,
} = {}) {
  if (!VIDEO_MODES.includes(mode)) throw new Error(`unknown video effect mode: ${mode}`);
  const events = new EventTarget();
  const stats = {
    mode,
    backend: null,
    modelReady: false,
    fps: 0,
    msPerFrame: 0,
    segmentMs: 0,
    composeMs: 0,
    width: 0,
    height: 0,
    scale: EFFECT_LEVELS[level].scale,
    maskEvery: EFFECT_LEVELS[level].maskEvery,
    effectWidth: 0,
    effectHeight: 0,
    lowered: false,
    note: "",
    framesIn: 0,
    framesOut: 0,
    framesPassedThrough: 0,
    recentMs: [], // the cost of the last 120 effect frames (ms), for benchmarks
    gaveUp: false, // the device was far too slow: the effect turned itself off
    error: null,
  };
  let segmenter = null;
  let loading = null;
  let closed = false;
  let stopPipeline = () => {};
  const small = document.createElement("canvas"); // model input: MediaPipe wants an element
  const smallCtx = small.getContext("2d", { willReadFrequently: false });
  const background = canvas(1, 1);
  const backgroundCtx = background.getContext("2d");
  const mask = canvas(1, 1);
  const maskCtx = mask.getContext("2d");
  let ewma = 0;
  let samples = 0;
  let maskAge = Infinity; // frames since the mask was computed
  let lastLook = null;
  let sinceAdapt = 0;
  let fpsWindow = { start: performance.now(), frames: 0 };

  function ensureModel() {
    if (segmenter || loading) return loading;
    loading = createSegmenter()
      .then((s) => {
        if (closed) return s.close();
        segmenter = s;
        stats.modelReady = true;
      })
      .catch((error) => {
        stats.error = String(error);
        status(`background effects unavailable: ${error.message ?? error}`);
      });
    return loading;
  }

  function status(note) {
    stats.note = note;
    events.dispatchEvent(new CustomEvent("status", { detail: { ...stats } }));
  }

  function countOut() {
    stats.framesOut += 1;
    fpsWindow.frames += 1;
    const now = performance.now();
    if (now - fpsWindow.start >= 1000) {
      stats.fps = (fpsWindow.frames * 1000) / (now - fpsWindow.start);
      fpsWindow = { start: now, frames: 0 };
    }
  }

  function describe() {
    const { maskEvery } = EFFECT_LEVELS[level];
    const scale = EFFECT_LEVELS[level].scale * Math.min(1, REFERENCE_WIDTH / (stats.width || 1));
    const size = `${Math.round(stats.width * scale)}×${Math.round(stats.height * scale)}`;
    return maskEvery > 1 ? `${size}, person mask every ${maskEvery} frames` : size;
  }

  function setLevel(next) {
    level = next;
    stats.scale = EFFECT_LEVELS[level].scale;
    stats.maskEvery = EFFECT_LEVELS[level].maskEvery;
    ewma = 0;
  }

  /** Lower (or raise back) the effect's resolution from the measured cost per frame. */
  function adaptTo(ms, frameRate) {
    samples += 1;
    if (samples > 1 && ms > giveUpMs) {
      // A frame that takes seconds freezes the page (the model's GL readbacks wait for a
      // busy GPU process): the call matters more than its background. Turn the effect off.
      stats.mode = "off";
      stats.gaveUp = true;
      status(`background effects turned off: this device took ${Math.round(ms)} ms for one ` +
        `frame`);
      return;
    }
    if (samples <= WARM_UP) return; // the first frames pay for the model's warm-up
    stats.recentMs.push(ms);
    if (stats.recentMs.length > 120) stats.recentMs.shift();
    ewma = ewma === 0 ? ms : 0.9 * ewma + 0.1 * ms;
    stats.msPerFrame = ewma;
    if (!adapt || ++sinceAdapt < ADAPT_EVERY) return;
    sinceAdapt = 0;
    const budget = 1000 / frameRate;
    const fps = Math.round(frameRate);
    if (ewma > 0.85 * budget && level < EFFECT_LEVELS.length - 1) {
      setLevel(level + 1);
      stats.lowered = true;
      status(`effect resolution lowered to ${describe()} to keep ${fps} fps ` +
        `(the call's frame rate is unchanged)`);
    } else if (ewma > 0.85 * budget) {
      status(`this device cannot keep ${fps} fps even at the lowest effect resolution ` +
        `(${ewma.toFixed(0)} ms per frame)`);
    } else if (ewma < 0.35 * budget && level > START_LEVEL) {
      setLevel(level - 1);
      stats.lowered = level > START_LEVEL;
      status(`effect resolution raised to ${describe()}`);
    }
  }

  /** Draw `source` (width × height) with the current mode into `target`; false when no
   *  mask is available yet (the caller then sends the frame unchanged). */
  async function render(source, width, height, target) {
    const look = LOOKS[stats.mode];
    const { maskEvery } = EFFECT_LEVELS[level];
    // Levels are fractions of 640 pixels across: a 1080p camera does not make the effect
    // (segmentation input, background blur) nine times dearer than a VGA one.
    const scale = EFFECT_LEVELS[level].scale * Math.min(1, REFERENCE_WIDTH / width);
    const w = Math.max(16, Math.round(width * scale));
    const h = Math.max(16, Math.round(height * scale));
    const t0 = performance.now();
    if (w !== stats.effectWidth || h !== stats.effectHeight || look !== lastLook) maskAge = Infinity;
    stats.width = width;
    stats.height = height;
    stats.effectWidth = w;
    stats.effectHeight = h;
    resize(small, w, h);
    resize(background, w, h);
    resize(mask, w, h);
    resize(target, width, height);
    smallCtx.drawImage(source, 0, 0, w, h);

    if (maskAge >= maskEvery) {
      const t1 = performance.now();
      maskCtx.clearRect(0, 0, w, h);
      maskCtx.filter = `blur(${look.feather}px)`;
      const drawn = await segmenter.segment(small, (m) => maskCtx.drawImage(m, 0, 0, w, h));
      maskCtx.filter = "none";
      stats.segmentMs = performance.now() - t1;
      if (!drawn) return false;
      maskAge = 0;
      lastLook = look;
    }
    maskAge += 1;

    // Background: blurred at the effect's resolution (a blur is low-pass, so nothing is lost
    // by working small) with the person cut out by the feathered mask; then drawn, scaled up,
    // over the full-resolution frame, which shows through where the person is.
    backgroundCtx.globalCompositeOperation = "copy";
    backgroundCtx.filter = `blur(${look.radius * scale}px) brightness(${look.brightness})`;
    backgroundCtx.drawImage(small, 0, 0, w, h);
    backgroundCtx.filter = "none";
    backgroundCtx.globalCompositeOperation = "destination-out";
    backgroundCtx.drawImage(mask, 0, 0);
    backgroundCtx.globalCompositeOperation = "source-over";
    const out = target.getContext("2d");
    out.drawImage(source, 0, 0, width, height);
    out.drawImage(background, 0, 0, width, height);
    stats.composeMs = performance.now() - t0 - (maskAge === 1 ? stats.segmentMs : 0);
    return true;
  }

  function frameRateOf(track) {
    return track.getSettings().frameRate || 30;
  }

  /** Chromium: VideoFrames in, VideoFrames out, no <video> element, no timer. */
  function insertableStreams(track) {
    const processor = new MediaStreamTrackProcessor({ track, maxBufferSize: 2 });
    const generator = new MediaStreamTrackGenerator({ kind: "video" });
    const reader = processor.readable.getReader();
    const writer = generator.writable.getWriter();
    const target = canvas(1, 1);
    const frameRate = frameRateOf(track);
    let running = true;
    (async () => {
      while (running) {
        const { value: frame, done } = await reader.read();
        if (done) break;
        stats.framesIn += 1;
        if (stats.mode === "off" || !segmenter) {
          stats.framesPassedThrough += 1;
          await writer.write(frame);
          countOut();
          continue;
        }
        const t0 = performance.now();
        let out = frame;
        try {
          if (await render(frame, frame.displayWidth, frame.displayHeight, target)) {
            out = new VideoFrame(target, { timestamp: frame.timestamp });
            frame.close();
          }
        } catch (error) {
          stats.error = String(error);
        }
        if (out === frame) stats.framesPassedThrough += 1;
        await writer.write(out);
        countOut();
        adaptTo(performance.now() - t0, frameRate);
        // The effect shares the page's main thread with the call (signaling messages, the
        // UI): let queued tasks run between frames, however far behind the camera it is.
        await yieldToPage();
      }
    })().catch((error) => {
      stats.error = String(error);
    });
    track.addEventListener("ended", () => generator.stop());
    stopPipeline = () => {
      running = false;
      reader.cancel().catch(() => {});
      generator.stop();
    };
    return generator;
  }

  /** Firefox, Safari: a <video> element drawn to a canvas, the canvas captured. */
  function canvasCapture(track) {
    const frameRate = frameRateOf(track);
    const video = document.createElement("video");
    video.muted = true;
    video.playsInline = true;
    video.srcObject = new MediaStream([track]);
    const target = document.createElement("canvas");
    const output = target.captureStream(frameRate).getVideoTracks()[0];
    const ctx = target.getContext("2d");
    let running = true;
    let busy = false;
    const schedule = () => {
      if (!running) return;
      if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(step);
      else setTimeout(step, 1000 / frameRate);
    };
    const step = async () => {
      if (!running || busy || !video.videoWidth) return schedule();
      busy = true;
      stats.framesIn += 1;
      const t0 = performance.now();
      try {
        const { videoWidth: width, videoHeight: height } = video;
        const drawn =
          stats.mode !== "off" && segmenter && (await render(video, width, height, target));
        if (!drawn) {
          resize(target, width, height);
          ctx.drawImage(video, 0, 0);
          stats.framesPassedThrough += 1;
        } else {
          adaptTo(performance.now() - t0, frameRate);
        }
        countOut();
      } catch (error) {
        stats.error = String(error);
      }
      busy = false;
      schedule();
    };
    video.play().then(schedule, (error) => (stats.error = String(error)));
    stopPipeline = () => {
      running = false;
      output.stop();
      video.srcObject = null;
    };
    return output;
  }

  return {
    get mode() {
      return stats.mode;
    },
    stats,
    addEventListener: events.addEventListener.bind(events),
    removeEventListener: events.removeEventListener.bind(events),
    /** Resolves once the model is loaded (it loads by itself when a mode is set). */
    ready() {
      return ensureModel() ?? Promise.resolve();
    },
    setMode(next) {
      if (!VIDEO_MODES.includes(next)) throw new Error(`unknown video effect mode: ${next}`);
      stats.mode = next;
      if (next !== "off") ensureModel();
    },
    /** The track to send in place of `track`; frames pass through unchanged while the mode
     *  is "off" or the model is still loading. Call once per effect. */
    process(track) {
      const insertable =
        typeof MediaStreamTrackProcessor !== "undefined" &&
        typeof MediaStreamTrackGenerator !== "undefined" &&
        typeof VideoFrame !== "undefined";
      const useInsertable = backend === "auto" ? insertable : backend === "insertable-streams";
      stats.backend = useInsertable ? "insertable-streams" : "canvas";
      if (stats.mode !== "off") ensureModel();
      return useInsertable ? insertableStreams(track) : canvasCapture(track);
    },
    close() {
      closed = true;
      stopPipeline();
      segmenter?.close();
      segmenter = null;
    },
  };
}
