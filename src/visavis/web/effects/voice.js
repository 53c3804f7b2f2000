// Voice isolation: RNNoise (a small recurrent network that removes steady and transient
// noise but keeps speech) in an AudioWorklet, on the sender's device.
//
//   const mic = await navigator.mediaDevices.getUserMedia({ audio: micConstraints(true) });
//   const voice = await createVoiceIsolation(mic.getAudioTracks()[0]);
//   pc.addTrack(voice.track);        // send this instead of the microphone's track
//   await voice.setEnabled(false);   // the toggle; the browser's own suppression comes back
//   voice.close();
//
// The browser's own noise suppression is switched off while ours is on (they would fight:
// two suppressors in a row remove speech along with noise) and back on when ours is off.
// The worklet and the model (wasm) come from vendor/@sapphi-red/web-noise-suppressor,
// served by visavis. RNNoise runs at 48 kHz, so the graph runs in a 48 kHz AudioContext.

const VENDOR = new URL("../vendor/@sapphi-red/web-noise-suppressor/dist/", import.meta.url);
export const SAMPLE_RATE = 48000;
/** How long an AudioContext may take to start before voice isolation gives up. */
const RESUME_WAIT_MS = 10000;

/** getUserMedia audio constraints for a microphone whose noise we suppress (or not). */
export function micConstraints(voiceIsolation = true) {
  return { echoCancellation: true, autoGainControl: true, noiseSuppression: !voiceIsolation };
}

let wasmLoading = null;

async function rnnoiseModule() {
  const { loadRnnoise, RnnoiseWorkletNode } = await import(new URL("index.js", VENDOR).href);
  wasmLoading ??= loadRnnoise({
    url: new URL("rnnoise.wasm", VENDOR).href,
    simdUrl: new URL("rnnoise_simd.wasm", VENDOR).href,
  }).catch((error) => {
    wasmLoading = null;
    throw error;
  });
  return { wasmBinary: await wasmLoading, RnnoiseWorkletNode };
}

/**
 * Route `track` through RNNoise. Returns `{track, enabled, setEnabled(on), stats, close()}`;
 * `track` is the processed microphone track to send. Pass `context` to share an
 * AudioContext (it must run at 48 kHz); otherwise one is made and closed with the effect.
 */
export async function createVoiceIsolation(track, { enabled = true, context = null } = {}) {
  const ownContext = !context;
  const ctx = context ?? new AudioContext({ sampleRate: SAMPLE_RATE, latencyHint: "interactive" });
  if (ctx.sampleRate !== SAMPLE_RATE) {
    throw new Error(`voice isolation needs a ${SAMPLE_RATE} Hz AudioContext, not ${ctx.sampleRate}`);
  }
  const { wasmBinary, RnnoiseWorkletNode } = await rnnoiseModule();
  await ctx.audioWorklet.addModule(new URL("rnnoise/workletProcessor.js", VENDOR).href);
  const source = ctx.createMediaStreamSource(new MediaStream([track]));
  const rnnoise = new RnnoiseWorkletNode(ctx, { maxChannels: 1, wasmBinary });
  // One channel in: a microphone source may be upmixed to stereo, and the worklet would then
  // denoise only the first channel and leave the second silent (half the level once mixed).
  rnnoise.channelCount = 1;
  rnnoise.channelCountMode = "explicit";
  const destination = ctx.createMediaStreamDestination();
  destination.channelCount = 1;
  rnnoise.connect(destination);
  const stats = { enabled, browserNoiseSuppression: null, model: "rnnoise", sampleRate: SAMPLE_RATE };
  let current = null;

  async function setEnabled(on) {
    if (current === on) return;
    current = on;
    stats.enabled = on;
    source.disconnect();
    if (on) source.connect(rnnoise);
    else source.connect(destination);
    // Ask the browser to stop (or resume) its own suppression on the microphone; browsers
    // that cannot change it on a live track keep what getUserMedia asked (micConstraints).
    try {
      await track.applyConstraints({ ...track.getConstraints(), noiseSuppression: !on });
    } catch {
      // not changeable on this browser: the constraints given at getUserMedia stand
    }
    stats.browserNoiseSuppression = track.getSettings().noiseSuppression ?? null;
  }

  await setEnabled(enabled);
  if (ctx.state === "suspended") {
    // A context that never runs (no audio device, as in headless Firefox here) would send
    // silence: give up after a bounded wait, so the caller keeps the microphone instead.
    const waited = new Promise((resolve) => setTimeout(resolve, RESUME_WAIT_MS));
    await Promise.race([ctx.resume().catch(() => {}), waited]);
    if (ctx.state !== "running") {
      source.disconnect();
      rnnoise.destroy();
      if (ownContext) ctx.close().catch(() => {});
      throw new Error("the audio engine did not start");
    }
  }
  const output = destination.stream.getAudioTracks()[0];
  return {
    track: output,
    context: ctx,
    stats,
    get enabled() {
      return current;
    },
    setEnabled,
    close() {
      source.disconnect();
      rnnoise.disconnect();
      rnnoise.destroy();
      output.stop();
      if (ownContext) ctx.close();
    },
  };
}
