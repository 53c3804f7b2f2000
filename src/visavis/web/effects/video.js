// Background blur and portrait on the sender's device.
//
//   const effect = createVideoEffect({ mode: "blur" });
//   const sent = effect.process(cameraTrack);   // send this track instead of the camera's
//   effect.setMode("portrait" | "blur" | "off"); // at any time, before or during a call
//   effect.stats                                 // fps, ms per frame, effect resolution, note
//   effect.addEventListener("status", ...)       // the effect changed its resolution, or
//                                                // gave up (stats.gaveUp: send the camera)
//   effect.close()
//
// Each camera frame is segmented by MediaPipe's selfie model; the background is blurred at
// the effect's own resolution (a fraction of the camera's) and scaled back up, the person
// is kept at full resolution through the (feathered) mask. All of that runs in a worker
// (video-worker.js, OffscreenCanvas): the page's main thread only hands frames over, so a
// slow model never freezes the call page. When the device cannot keep up with the camera's
// frame rate, the effect lowers its own resolution step by step instead of dropping
// frames, and says so in `stats.note` and a "status" event. Frames come from
// MediaStreamTrackProcessor/Generator where the browser has them (Chromium: their streams
// are transferred to the worker, which reads and writes VideoFrames itself) and from a
// <video> whose frames go to the worker as ImageBitmaps and come back into a canvas whose
// captureStream() is sent elsewhere (Firefox, Safari).
//
// When the segmentation runtime cannot run here (no WebGL, as in headless Firefox; the
// model failing to load; frames failing; nothing effected within START_MS; a frame over
// GIVE_UP_MS; the worker no longer answering), the effect gives up: mode "off",
// `stats.gaveUp`, a "status" event whose note says why. Its track then passes frames
// through (or, if the runtime hung, none): the caller sends the camera's own track again.

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
// Switched on, the camera's frames coming in and none out with the effect for this long
// (the model did not load, or hangs): the effect gives up. Loading the model takes seconds
// here, tens on a crowded machine; the frames pass through unchanged meanwhile.
const START_MS = 60000;
const SILENT_MS = 10000; // the least silence of the worker taken for "stopped answering"

const WORKER = new URL("video-worker.js", import.meta.url);
const VENDOR = new URL("../vendor/@mediapipe/selfie_segmentation/", import.meta.url);

/**
 * A video effect for one camera track. Options: `mode` ("off", "blur", "portrait"),
 * `backend` ("auto", "insertable-streams", "canvas"), `level` (start index into
 * EFFECT_LEVELS), `adapt` (false pins the resolution, for measurements), `giveUpMs` (a
 * frame slower than this turns the effect off; Infinity never does), `startMs` (no frame
 * effected for this long while frames come in, or the worker silent this long: give up).
 */
export function createVideoEffect({
  mode = "off",
  backend = "auto",
  level = START_LEVEL,
  adapt = true,
  giveUpMs = GIVE_UP_MS,
  startMs = START_MS,
} = {}) {
  if (!VIDEO_MODES.includes(mode)) throw new Error(`unknown video effect mode: ${mode}`);
  const events = new EventTarget();
  // The worker's figures (video-worker.js), copied here as it reports them (several times
  // a second); these are what is known before its first report.
  const stats = {
    mode,
    backend: null,
    modelReady: false,
    level,
    ...EFFECT_LEVELS[level],
    framesOut: 0,
    framesPassedThrough: 0,
    recentMs: [],
    note: "",
    gaveUp: false,
    error: null,
  };
  const worker = new Worker(WORKER, { name: "visavis-video-effect" });
  let closed = false;
  let heard = performance.now(); // the worker's last message (it reports every second)
  let watching = null;
  let stopPipeline = () => {};
  let onFrame = null; // the canvas path's pending frame
  let readyResolve;
  const ready = new Promise((resolve) => {
    readyResolve = resolve;
  });

  function announce() {
    events.dispatchEvent(new CustomEvent("status", { detail: { ...stats } }));
  }

  /** The page's own give-up (the worker failed or stopped answering). */
  function giveUp(note) {
    if (stats.gaveUp || closed) return;
    Object.assign(stats, { mode: "off", gaveUp: true, note });
    worker.postMessage({ type: "mode", mode: "off" });
    readyResolve();
    announce();
  }

  worker.onmessage = ({ data }) => {
    heard = performance.now();
    if (data.stats) Object.assign(stats, data.stats);
    if (data.type === "ready") readyResolve();
    else if (data.type === "status") {
      if (stats.gaveUp || (stats.error && !stats.modelReady)) readyResolve();
      announce();
    } else if (data.type === "frame") onFrame?.(data.bitmap);
  };
  worker.onerror = (event) => {
    stats.error = event.message || "the effect's worker failed";
    giveUp(`background effects unavailable: ${stats.error}`);
  };
  worker.postMessage({
    type: "init",
    vendor: VENDOR.href,
    mode,
    level,
    start: START_LEVEL,
    adapt,
    giveUpMs,
    startMs,
    looks: LOOKS,
    levels: EFFECT_LEVELS,
    reference: REFERENCE_WIDTH,
    adaptEvery: ADAPT_EVERY,
    warmUp: WARM_UP,
  });

  function frameRateOf(track) {
    return track.getSettings().frameRate || 30;
  }

  /** Chromium: the processor's and generator's streams go to the worker; the page does
   *  nothing per frame. */
  function insertableStreams(track) {
    const processor = new MediaStreamTrackProcessor({ track, maxBufferSize: 2 });
    const generator = new MediaStreamTrackGenerator({ kind: "video" });
    const { readable } = processor;
    const { writable } = generator;
    worker.postMessage({ type: "streams", readable, writable, frameRate: frameRateOf(track) }, [
      readable,
      writable,
    ]);
    track.addEventListener("ended", () => generator.stop());
    stopPipeline = () => generator.stop();
    return generator;
  }

  /** Firefox, Safari: a <video>'s frames go to the worker as ImageBitmaps and come back
   *  into a canvas (bitmaprenderer: no copy) whose captureStream() is sent. */
  function canvasCapture(track) {
    const frameRate = frameRateOf(track);
    const video = document.createElement("video");
    video.muted = true;
    video.playsInline = true;
    video.srcObject = new MediaStream([track]);
    const target = document.createElement("canvas");
    const output = target.captureStream(frameRate).getVideoTracks()[0];
    const ctx = target.getContext("bitmaprenderer");
    let running = true;
    let busy = false;
    const schedule = () => {
      if (!running) return;
      if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(step);
      else setTimeout(step, 1000 / frameRate);
    };
    onFrame = (bitmap) => {
      busy = false;
      if (!running) return bitmap.close();
      if (target.width !== bitmap.width) target.width = bitmap.width;
      if (target.height !== bitmap.height) target.height = bitmap.height;
      ctx.transferFromImageBitmap(bitmap);
    };
    const step = async () => {
      if (running && !busy && video.videoWidth) {
        busy = true; // one frame at a time in the worker: a slow one skips camera frames
        try {
          const bitmap = await createImageBitmap(video);
          worker.postMessage({ type: "frame", bitmap, frameRate }, [bitmap]);
        } catch (error) {
          stats.error = String(error);
          busy = false;
        }
      }
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
    /** Resolves once the model is loaded (or failed to: see stats.error). */
    ready() {
      worker.postMessage({ type: "load" });
      return ready;
    },
    setMode(next) {
      if (!VIDEO_MODES.includes(next)) throw new Error(`unknown video effect mode: ${next}`);
      if (stats.mode === "off" && next !== "off") {
        heard = performance.now();
        stats.gaveUp = false; // on again: a fresh try
      }
      stats.mode = next;
      worker.postMessage({ type: "mode", mode: next });
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
      // A worker wedged in synchronous code cannot give up by itself: it reports every
      // second while the effect is on, so its silence is noticed here.
      heard = performance.now();
      watching = setInterval(() => {
        if (stats.mode !== "off" && performance.now() - heard > Math.max(startMs, SILENT_MS)) {
          giveUp("background effects unavailable: the effect stopped answering");
        }
      }, 1000);
      return useInsertable ? insertableStreams(track) : canvasCapture(track);
    },
    close() {
      if (closed) return;
      closed = true;
      clearInterval(watching);
      stopPipeline();
      worker.postMessage({ type: "close" });
    },
  };
}
