// Page behind benchmarks/effects.py: the cost of each effect per frame, in this browser.
import { createVideoEffect, EFFECT_LEVELS } from "/effects/video.js";
import { createVoiceIsolation, SAMPLE_RATE } from "/effects/voice.js";
import { createSpatialMixer } from "/effects/spatial.js";
import { ANIMATED_KINDS, drawReactionFrame } from "/effects/reaction-animations.js";
import { until } from "./common.js";

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : null;
};

/** Per video mode and effect level: median ms per frame (segmentation + compositing) and
 *  the frames per second delivered, over `frames` frames at 640×480, resolution pinned. */
window.video = async (frames) => {
  const stream = await navigator.mediaDevices.getUserMedia({
    video: { width: 640, height: 480, frameRate: 30 },
  });
  const camera = stream.getVideoTracks()[0];
  const rows = [];
  for (const mode of ["blur", "portrait"]) {
    for (let level = 0; level < EFFECT_LEVELS.length; level++) {
      const effect = createVideoEffect({ mode, level, adapt: false, giveUpMs: Infinity, startMs: Infinity });
      const out = effect.process(camera.clone());
      await effect.ready();
      await until(() => effect.stats.recentMs.length >= frames, 120000, "frames");
      const t0 = performance.now();
      const n0 = effect.stats.framesOut;
      await until(() => effect.stats.framesOut >= n0 + 30, 60000, "30 more frames");
      rows.push({
        mode,
        ...EFFECT_LEVELS[level],
        width: effect.stats.effectWidth,
        height: effect.stats.effectHeight,
        msPerFrame: median(effect.stats.recentMs),
        segmentMs: effect.stats.segmentMs,
        fps: (30 * 1000) / (performance.now() - t0),
      });
      effect.close();
      out.stop();
    }
  }
  camera.stop();
  return rows;
};

function noise(ctx, seconds) {
  const buffer = ctx.createBuffer(1, ctx.sampleRate * seconds, ctx.sampleRate);
  const data = buffer.getChannelData(0);
  for (let i = 0; i < data.length; i++) data[i] = (Math.random() * 2 - 1) * 0.2;
  return buffer;
}

/** Time to render `seconds` of audio offline through `build(ctx, source) -> node`. */
async function offline(seconds, build) {
  const ctx = new OfflineAudioContext(2, SAMPLE_RATE * seconds, SAMPLE_RATE);
  const source = new AudioBufferSourceNode(ctx, { buffer: noise(ctx, seconds) });
  (await build(ctx, source)).connect(ctx.destination);
  source.start();
  const t0 = performance.now();
  await ctx.startRendering();
  return performance.now() - t0;
}

/** RNNoise: ms of CPU per 10 ms of audio (its frame size), minus the bare graph's cost. */
window.voice = async (seconds) => {
  const { loadRnnoise, RnnoiseWorkletNode } = await import(
    "/vendor/@sapphi-red/web-noise-suppressor/dist/index.js"
  );
  const base = "/vendor/@sapphi-red/web-noise-suppressor/dist/";
  const wasmBinary = await loadRnnoise({
    url: `${base}rnnoise.wasm`,
    simdUrl: `${base}rnnoise_simd.wasm`,
  });
  // Alternate bare and denoised renders; the fastest of each is the least disturbed by
  // other jobs on a shared machine.
  const bare = [];
  const denoised = [];
  for (let i = 0; i < 3; i++) {
    bare.push(await offline(seconds, async (ctx, source) => source));
    denoised.push(
      await offline(seconds, async (ctx, source) => {
        await ctx.audioWorklet.addModule(`${base}rnnoise/workletProcessor.js`);
        const node = new RnnoiseWorkletNode(ctx, { maxChannels: 1, wasmBinary });
        node.channelCount = 1;
        node.channelCountMode = "explicit";
        return source.connect(node);
      }),
    );
  }
  const cost = Math.min(...denoised) - Math.min(...bare);
  return { msPer10ms: cost / (seconds * 100), realtimeFactor: Math.min(...denoised) / (seconds * 1000) };
};

/** Spatial mixer: ms per 10 ms of audio per voice, stereo panning and HRTF. */
window.spatial = async (seconds, voices) => {
  const render = (model) =>
    offline(seconds, async (ctx, source) => {
      const sum = new GainNode(ctx);
      for (let i = 0; i < voices; i++) {
        const x = (i / (voices - 1)) * 2 - 1;
        const node = model === "stereo"
          ? new StereoPannerNode(ctx, { pan: x * 0.7 })
          : new PannerNode(ctx, { panningModel: "HRTF", positionX: Math.sin(x * Math.PI / 2),
              positionZ: -Math.cos(x * Math.PI / 2) });
        source.connect(node).connect(sum);
      }
      return sum;
    });
  const fastest = async (run) => Math.min(await run(), await run(), await run());
  const bare = await fastest(() => offline(seconds, async (ctx, source) => source));
  const per = (ms) => (ms - bare) / (seconds * 100) / voices;
  return {
    stereo: per(await fastest(() => render("stereo"))),
    hrtf: per(await fastest(() => render("hrtf"))),
  };
};

/** Reactions: median ms to draw one animation frame of each kind on a 640×360 tile. */
window.reactions = async (frames) => {
  const canvas = new OffscreenCanvas(640, 360);
  const ctx = canvas.getContext("2d");
  const rows = {};
  for (const kind of ANIMATED_KINDS) {
    const times = [];
    let state;
    for (let i = 0; i < frames; i++) {
      const t0 = performance.now();
      ctx.clearRect(0, 0, 640, 360);
      ctx.save();
      state = drawReactionFrame(ctx, kind, i / frames, 640, 360, state);
      ctx.restore();
      ctx.getImageData(0, 0, 1, 1); // flush the drawing
      times.push(performance.now() - t0);
    }
    rows[kind] = median(times);
  }
  return rows;
};

// -- what headless Firefox can measure (benchmarks/effects_firefox.py): no WebGL and no
// running AudioContext there, but OfflineAudioContext renders and canvas 2D draws. --------

/** RMS level (dBFS) of `data` from sample `from` on. */
function dbfs(data, from = 0) {
  let sum = 0;
  for (let i = from; i < data.length; i++) sum += data[i] * data[i];
  return 10 * Math.log10(sum / Math.max(1, data.length - from) + 1e-20);
}

/** RNNoise on steady white noise, rendered offline: the level in and out (dBFS, after
 *  the first half second), so a browser whose AudioWorklet runs it shows the drop. */
window.noiseDrop = async (seconds) => {
  const base = "/vendor/@sapphi-red/web-noise-suppressor/dist/";
  const { loadRnnoise, RnnoiseWorkletNode } = await import(`${base}index.js`);
  const wasmBinary = await loadRnnoise({
    url: `${base}rnnoise.wasm`,
    simdUrl: `${base}rnnoise_simd.wasm`,
  });
  const ctx = new OfflineAudioContext(1, SAMPLE_RATE * seconds, SAMPLE_RATE);
  const input = noise(ctx, seconds);
  const source = new AudioBufferSourceNode(ctx, { buffer: input });
  await ctx.audioWorklet.addModule(`${base}rnnoise/workletProcessor.js`);
  const node = new RnnoiseWorkletNode(ctx, { maxChannels: 1, wasmBinary });
  node.channelCount = 1;
  node.channelCountMode = "explicit";
  source.connect(node).connect(ctx.destination);
  source.start();
  const out = await ctx.startRendering();
  const from = SAMPLE_RATE / 2;
  return { inDb: dbfs(input.getChannelData(0), from), outDb: dbfs(out.getChannelData(0), from) };
};

/** One voice on the left (x = -1, as the mixer places the leftmost tile), rendered
 *  offline: how much louder the left channel is (dB), stereo panning and HRTF. */
window.panning = async (seconds) => {
  const left = async (model) => {
    const ctx = new OfflineAudioContext(2, SAMPLE_RATE * seconds, SAMPLE_RATE);
    const source = new AudioBufferSourceNode(ctx, { buffer: noise(ctx, seconds) });
    const node = model === "stereo"
      ? new StereoPannerNode(ctx, { pan: -0.7 })
      : new PannerNode(ctx, { panningModel: "HRTF", positionX: -1, positionZ: 0 });
    source.connect(node).connect(ctx.destination);
    source.start();
    const out = await ctx.startRendering();
    return dbfs(out.getChannelData(0)) - dbfs(out.getChannelData(1));
  };
  return { stereo: await left("stereo"), hrtf: await left("hrtf") };
};

/** The canvas path (what Firefox and Safari run) with the effect off: frames per second
 *  through the worker and back over `ms`, and how late a 20 ms timer runs meanwhile. */
window.canvasPath = async (ms) => {
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
  const camera = stream.getVideoTracks()[0];
  const effect = createVideoEffect({ mode: "off", backend: "canvas" });
  const out = effect.process(camera);
  await until(() => effect.stats.framesOut > 10, 30000, "frames through the canvas path");
  const n0 = effect.stats.framesOut;
  const t0 = performance.now();
  const late = [];
  let due = performance.now() + 20;
  await new Promise((resolve) => {
    const tick = () => {
      const now = performance.now();
      late.push(Math.max(0, now - due));
      if (now - t0 >= ms) return resolve();
      due = now + 20;
      setTimeout(tick, 20);
    };
    setTimeout(tick, 20);
  });
  const fps = ((effect.stats.framesOut - n0) * 1000) / (performance.now() - t0);
  late.sort((a, b) => a - b);
  const settings = camera.getSettings();
  effect.close();
  out.stop();
  camera.stop();
  return {
    fps,
    camera: `${settings.width}x${settings.height}@${settings.frameRate}`,
    timerLateP95: late[Math.floor(late.length * 0.95)],
  };
};

/** Blur switched on: how long until the effect gives up (here: no WebGL), and why. */
window.blurGivesUp = async () => {
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
  const camera = stream.getVideoTracks()[0];
  const t0 = performance.now();
  const effect = createVideoEffect({ mode: "blur" });
  const out = effect.process(camera);
  await until(() => effect.stats.gaveUp, 90000, "the effect to give up");
  const result = { ms: performance.now() - t0, note: effect.stats.note, backend: effect.stats.backend };
  effect.close();
  out.stop();
  camera.stop();
  return result;
};
