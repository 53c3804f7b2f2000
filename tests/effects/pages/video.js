// Harness for effects/video.js: the fake camera through the effect, frames and rates out.
import { createVideoEffect } from "/effects/video.js";
import { grab, until } from "./common.js";

let camera = null;
let effect = null;
let output = null;

/** The effect's "status" events so far (what it said, and its figures then). */
window.statuses = [];

/** Start the camera at 640×480 and the effect in `mode`, without waiting for the model. */
window.begin = async (mode, options = {}) => {
  const stream = await navigator.mediaDevices.getUserMedia({
    video: { width: 640, height: 480, frameRate: 30 },
  });
  camera = stream.getVideoTracks()[0];
  effect = createVideoEffect({ mode, ...options });
  effect.addEventListener("status", ({ detail }) => {
    window.statuses.push({ ...detail, recentMs: undefined });
  });
  output = effect.process(camera);
  document.getElementById("out").srcObject = new MediaStream([output]);
  return { ...effect.stats, settings: camera.getSettings() };
};

/** Start as `begin` does; resolve once the model runs. */
window.start = async (mode, options = {}) => {
  await window.begin(mode, options);
  if (mode !== "off") {
    await effect.ready();
    await until(() => effect.stats.framesOut - effect.stats.framesPassedThrough > 5, 30000,
      "effect frames");
  }
  return { ...effect.stats, settings: camera.getSettings() };
};

window.setMode = (mode) => effect.setMode(mode);
window.stats = () => ({ ...effect.stats });
window.grabCamera = () => grab(camera);
window.grabOutput = () => grab(output);

/** Frames out per second over `ms`, from the effect's own counter. */
window.measureFps = async (ms) => {
  const first = effect.stats.framesOut;
  const t0 = performance.now();
  await new Promise((resolve) => setTimeout(resolve, ms));
  return ((effect.stats.framesOut - first) * 1000) / (performance.now() - t0);
};

/** Frames per second over the first `ms` window in which the effect kept its resolution
 *  (it adapts in its first seconds); at most `windows` windows. */
window.settledFps = async (ms, windows) => {
  for (let i = 0; i < windows; i++) {
    const before = { ...effect.stats };
    const fps = await window.measureFps(ms);
    const after = effect.stats;
    if (before.scale === after.scale && before.maskEvery === after.maskEvery) {
      return { fps, stats: { ...after } };
    }
  }
  throw new Error(`the effect never kept one resolution for ${ms} ms`);
};
