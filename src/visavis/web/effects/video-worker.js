// The background effect's worker: segmentation and compositing, off the page's main thread.
//
// A classic worker (MediaPipe's selfie segmentation is a classic script that loads its wasm
// with importScripts in a worker, and draws with WebGL on an OffscreenCanvas of its own).
// Whatever the model's WebGL readbacks wait for (on software GL: a GPU process busy with
// the page's videos), only this thread waits: the call page stays responsive.
//
// video.js (the page side) talks to it:
//   → {type: "init", vendor, mode, level, adapt, giveUpMs, startMs, looks, levels, start,
//      reference}
//   → {type: "streams", readable, writable, frameRate}   Chromium: VideoFrames in and out
//                                                        (transferred streams)
//   → {type: "frame", bitmap, frameRate}                 elsewhere: one ImageBitmap in,
//   ← {type: "frame", bitmap | null}                     its composited ImageBitmap out
//   → {type: "mode", mode}, {type: "load"} (the model, now), {type: "close"}
//   ← {type: "stats", stats}, {type: "status", stats}, {type: "ready"}, {type: "error"}
//
// It gives up (stats.gaveUp, mode "off", a status note saying why; the page then sends the
// camera's own track) when the segmentation runtime cannot run: no WebGL here (MediaPipe
// uploads frames and reads masks back through it), the model failing to load, MAX_FAILURES
// frames in a row failing, no frame coming out with the effect within `startMs` while the
// camera's frames come in, or one frame taking longer than `giveUpMs` (after the first).
// While the effect is on it reports its figures every second even with no frame, so the
// page can tell a worker that stopped answering.

/* global SelfieSegmentation */
"use strict";

let config = null; // the init message: looks, levels, tuning
let segmenter = null;
let loading = null;
let running = true;
const stats = {
  mode: "off",
  modelReady: false,
  fps: 0,
  msPerFrame: 0,
  segmentMs: 0,
  composeMs: 0,
  width: 0,
  height: 0,
  scale: 0,
  maskEvery: 1,
  level: 0,
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

const small = new OffscreenCanvas(1, 1); // model input
const smallCtx = small.getContext("2d");
const background = new OffscreenCanvas(1, 1);
const backgroundCtx = background.getContext("2d");
const raw = new OffscreenCanvas(1, 1); // the model's mask, confidence in alpha
const rawCtx = raw.getContext("2d", { willReadFrequently: true });
const mask = new OffscreenCanvas(1, 1); // ... feathered
const maskCtx = mask.getContext("2d");
const target = new OffscreenCanvas(1, 1);
const targetCtx = target.getContext("2d");
let ewma = 0;
let samples = 0;
let maskAge = Infinity; // frames since the mask was computed
let lastLook = null;
let sinceAdapt = 0;
let fpsWindow = { start: performance.now(), frames: 0 };
let lastStats = 0;
// The give-up watch (see the top): consecutive failed frames; since when the effect was
// switched on or last put out an effected frame, and how many frames had come in then;
// when the frame now in the effect started (0: none); effected frames since switched on.
const MAX_FAILURES = 3;
let failures = 0;
let progress = { at: performance.now(), framesIn: 0 };
let renderSince = 0;
let effected = 0;

function resize(canvas, width, height) {
  if (canvas.width !== width) canvas.width = width;
  if (canvas.height !== height) canvas.height = height;
}

function report(type = "stats") {
  postMessage({ type, stats: { ...stats, recentMs: [...stats.recentMs] } });
}

function status(note) {
  stats.note = note;
  report("status");
}

/** Switch the effect off for good (until switched on again) and say why. */
function giveUp(note) {
  if (stats.gaveUp) return;
  stats.mode = "off";
  stats.gaveUp = true;
  status(note);
}

/** The effect was switched on (again): a fresh start for the give-up watch. */
function switchedOn() {
  stats.gaveUp = false;
  failures = 0;
  effected = 0;
  progress = { at: performance.now(), framesIn: stats.framesIn };
  ensureModel();
}

/** MediaPipe's selfie segmentation uploads each frame and reads its mask back through
 *  WebGL, even with CPU inference: without a context (headless Firefox here) every frame
 *  would fail, so find out before loading 6 MB of wasm. */
function requireWebGL() {
  const probe = new OffscreenCanvas(1, 1);
  let gl = null;
  try {
    gl = probe.getContext("webgl2") ?? probe.getContext("webgl");
  } catch {
    // some browsers throw rather than answer null: the same answer
  }
  if (!gl) throw new Error("this browser gives it no WebGL");
  gl.getExtension("WEBGL_lose_context")?.loseContext();
}

function effectedFrame() {
  failures = 0;
  effected += 1;
  progress = { at: performance.now(), framesIn: stats.framesIn };
}

function failedFrame(error) {
  stats.error = String(error);
  failures += 1;
  if (failures >= MAX_FAILURES) {
    giveUp(`background effects unavailable: ${error?.message ?? error}`);
  }
}

/** Every second while the effect is on: give up on a hung or never-starting runtime, and
 *  tell the page this worker still answers. */
function watch() {
  if (!config || stats.mode === "off") return;
  const now = performance.now();
  if (renderSince && effected > 0 && now - renderSince > config.giveUpMs) {
    giveUp(`background effects turned off: this device took over ` +
      `${Math.round(now - renderSince)} ms for one frame`);
  } else if (
    now - progress.at > config.startMs &&
    (renderSince || stats.framesIn > progress.framesIn)
  ) {
    giveUp(`background effects unavailable: no frame came out of the effect in ` +
      `${(config.startMs / 1000).toFixed(config.startMs < 1000 ? 1 : 0)} s`);
  } else {
    report();
  }
}
setInterval(watch, 1000);

/** Load MediaPipe's selfie segmentation here (once): its wasm and the landscape model. */
function ensureModel() {
  if (segmenter || loading) return loading;
  loading = (async () => {
    const vendor = config.vendor;
    requireWebGL();
    // The solution's worker path calls createMediapipeSolutionsWasm(Module), and passes
    // every file it lists to importScripts, the model too: only scripts are scripts (the
    // model is fetched by the runtime when the graph asks for it).
    self.Module = { locateFile: (file) => new URL(file, vendor).href };
    const importScriptsOnly = self.importScripts.bind(self);
    self.importScripts = (...urls) => importScriptsOnly(...urls.filter((u) => /\.js$/.test(u)));
    importScripts(new URL("selfie_segmentation.js", vendor).href);
    const solution = new SelfieSegmentation({ locateFile: (file) => new URL(file, vendor).href });
    // CPU inference (XNNPACK): 20× faster than the solution's WebGL inference on software
    // GL, the same results (docs/effects.md).
    solution.setOptions({ modelSelection: 1, selfieMode: false, useCpuInference: true });
    let waiting = null;
    solution.onResults((results) => {
      const callback = waiting;
      waiting = null;
      callback?.(results.segmentationMask);
    });
    await solution.initialize();
    // The solution's worker path creates its WebGL context on an OffscreenCanvas but never
    // keeps it where its image upload and mask readback look for it (the page path does).
    // Hand it over: internals of the pinned version 0.1.1675465747 (package.json), checked.
    const inner = solution.h;
    if (!(inner?.m instanceof OffscreenCanvas)) {
      throw new Error("unexpected @mediapipe/selfie_segmentation version: pin 0.1.1675465747");
    }
    inner.K ??= inner.m.getContext("webgl2") ?? inner.m.getContext("webgl");
    if (!inner.K) throw new Error("this browser gives it no WebGL");
    segmenter = {
      async segment(image, draw) {
        let drawn = false;
        waiting = (m) => {
          draw(m);
          drawn = true;
        };
        await solution.send({ image });
        waiting = null;
        return drawn;
      },
      close: () => solution.close(),
    };
    stats.modelReady = true;
    postMessage({ type: "ready" });
  })().catch((error) => {
    stats.error = String(error);
    loading = null; // switching the effect on again tries again
    giveUp(`background effects unavailable: ${error.message ?? error}`);
  });
  return loading;
}

function countOut() {
  stats.framesOut += 1;
  fpsWindow.frames += 1;
  const now = performance.now();
  if (now - fpsWindow.start >= 1000) {
    stats.fps = (fpsWindow.frames * 1000) / (now - fpsWindow.start);
    fpsWindow = { start: now, frames: 0 };
  }
  if (now - lastStats >= 250) {
    lastStats = now;
    report();
  }
}

function scaleOf(width) {
  // Levels are fractions of 640 pixels across: a 1080p camera does not make the effect
  // (segmentation input, background blur) nine times dearer than a VGA one.
  return config.levels[stats.level].scale * Math.min(1, config.reference / (width || 1));
}

function describe() {
  const { maskEvery } = config.levels[stats.level];
  const scale = scaleOf(stats.width);
  const size = `${Math.round(stats.width * scale)}×${Math.round(stats.height * scale)}`;
  return maskEvery > 1 ? `${size}, person mask every ${maskEvery} frames` : size;
}

function setLevel(next) {
  stats.level = next;
  stats.scale = config.levels[next].scale;
  stats.maskEvery = config.levels[next].maskEvery;
  ewma = 0;
}

/** Lower (or raise back) the effect's resolution from the measured cost per frame. */
function adaptTo(ms, frameRate) {
  samples += 1;
  if (samples > 1 && ms > config.giveUpMs) {
    // Frames that take seconds are no video: the call matters more than its background.
    giveUp(`background effects turned off: this device took ${Math.round(ms)} ms for one frame`);
    return;
  }
  if (samples <= config.warmUp) return; // the first frames pay for the model's warm-up
  stats.recentMs.push(ms);
  if (stats.recentMs.length > 120) stats.recentMs.shift();
  ewma = ewma === 0 ? ms : 0.9 * ewma + 0.1 * ms;
  stats.msPerFrame = ewma;
  if (!config.adapt || ++sinceAdapt < config.adaptEvery) return;
  sinceAdapt = 0;
  const budget = 1000 / frameRate;
  const fps = Math.round(frameRate);
  const last = config.levels.length - 1;
  if (ewma > 0.85 * budget && stats.level < last) {
    setLevel(stats.level + 1);
    stats.lowered = true;
    status(`effect resolution lowered to ${describe()} to keep ${fps} fps ` +
      `(the call's frame rate is unchanged)`);
  } else if (ewma > 0.85 * budget) {
    status(`this device cannot keep ${fps} fps even at the lowest effect resolution ` +
      `(${ewma.toFixed(0)} ms per frame)`);
  } else if (ewma < 0.35 * budget && stats.level > config.start) {
    setLevel(stats.level - 1);
    stats.lowered = stats.level > config.start;
    status(`effect resolution raised to ${describe()}`);
  }
}

/** Draw `source` (width × height) with the current mode into `target`; false when no
 *  mask is available (the caller then sends the frame unchanged). */
async function render(source, width, height) {
  const look = config.looks[stats.mode];
  const { maskEvery } = config.levels[stats.level];
  const scale = scaleOf(width);
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
  resize(raw, w, h);
  resize(mask, w, h);
  resize(target, width, height);
  smallCtx.drawImage(source, 0, 0, w, h);

  if (maskAge >= maskEvery) {
    const t1 = performance.now();
    const drawn = await segmenter.segment(small, (m) => {
      // Here the model's confidence comes in the red channel of an opaque bitmap (its
      // worker context has no alpha): move it to alpha, the mask's currency below.
      rawCtx.globalCompositeOperation = "copy";
      rawCtx.drawImage(m, 0, 0, w, h);
      m.close?.();
      const pixels = rawCtx.getImageData(0, 0, w, h);
      const data = pixels.data;
      for (let i = 0; i < data.length; i += 4) data[i + 3] = data[i];
      rawCtx.putImageData(pixels, 0, 0);
    });
    if (drawn) {
      maskCtx.clearRect(0, 0, w, h);
      maskCtx.filter = `blur(${look.feather}px)`; // feathered edge
      maskCtx.drawImage(raw, 0, 0);
    }
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
  targetCtx.drawImage(source, 0, 0, width, height);
  targetCtx.drawImage(background, 0, 0, width, height);
  stats.composeMs = performance.now() - t0 - (maskAge === 1 ? stats.segmentMs : 0);
  return true;
}

const active = () => stats.mode !== "off" && segmenter;

/** Chromium: VideoFrames from the camera's processor to the generator, transferred here. */
async function pump(readable, writable, frameRate) {
  const reader = readable.getReader();
  const writer = writable.getWriter();
  while (running) {
    const { value: frame, done } = await reader.read();
    if (done) break;
    stats.framesIn += 1;
    if (!active()) {
      stats.framesPassedThrough += 1;
      await writer.write(frame);
      countOut();
      continue;
    }
    const t0 = performance.now();
    renderSince = t0;
    let out = frame;
    try {
      if (await render(frame, frame.displayWidth, frame.displayHeight)) {
        out = new VideoFrame(target, { timestamp: frame.timestamp });
        frame.close();
        effectedFrame();
      }
    } catch (error) {
      failedFrame(error);
    }
    renderSince = 0;
    if (out === frame) stats.framesPassedThrough += 1;
    await writer.write(out);
    countOut();
    if (out !== frame) adaptTo(performance.now() - t0, frameRate);
  }
  reader.cancel().catch(() => {});
  writer.close().catch(() => {});
}

/** Elsewhere: one ImageBitmap in, the composited ImageBitmap out (null: send the input). */
async function one(bitmap, frameRate) {
  stats.framesIn += 1;
  let out = null;
  if (active()) {
    const t0 = performance.now();
    renderSince = t0;
    try {
      if (await render(bitmap, bitmap.width, bitmap.height)) {
        out = target.transferToImageBitmap();
        effectedFrame();
        adaptTo(performance.now() - t0, frameRate);
      }
    } catch (error) {
      failedFrame(error);
    }
    renderSince = 0;
  }
  if (!out) stats.framesPassedThrough += 1;
  countOut();
  if (out) {
    bitmap.close();
    postMessage({ type: "frame", bitmap: out }, [out]);
  } else {
    postMessage({ type: "frame", bitmap }, [bitmap]);
  }
}

self.onmessage = ({ data }) => {
  switch (data.type) {
    case "init":
      config = data;
      stats.mode = data.mode;
      setLevel(data.level);
      if (data.mode !== "off") switchedOn();
      break;
    case "mode": {
      const wasOff = stats.mode === "off";
      stats.mode = data.mode;
      if (data.mode !== "off" && wasOff) switchedOn();
      report();
      break;
    }
    case "load":
      ensureModel();
      break;
    case "streams":
      pump(data.readable, data.writable, data.frameRate).catch((error) => {
        stats.error = String(error);
        report();
      });
      break;
    case "frame":
      one(data.bitmap, data.frameRate);
      break;
    case "close":
      running = false;
      segmenter?.close();
      segmenter = null;
      close();
      break;
    default:
      break;
  }
};
