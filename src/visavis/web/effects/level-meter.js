// Audio levels without touching the samples on the main thread: a microphone's level for
// the UI, and the measurements in docs/effects.md.
//
//   const meter = await createLevelMeter(ctx, node, { channels: 2 });
//   meter.levels   // [[rms ch0, rms ch1], ...] per window (linear, 0..1), newest last
//   meter.close()

const WORKLET = new URL("level-meter-worklet.js", import.meta.url).href;

/** Meter `node`'s first `channels` channels over `windowMs` windows; keeps `keep` windows. */
export async function createLevelMeter(
  ctx,
  node,
  { channels = 1, windowMs = 20, keep = 3000, batch = 5 } = {},
) {
  await ctx.audioWorklet.addModule(WORKLET);
  const meter = new AudioWorkletNode(ctx, "visavis-level-meter", {
    channelCount: channels,
    channelCountMode: "explicit",
    channelInterpretation: "discrete",
    numberOfInputs: 1,
    numberOfOutputs: 0,
    processorOptions: { windowMs, batch },
  });
  const levels = [];
  meter.port.onmessage = ({ data }) => {
    levels.push(...data);
    if (levels.length > keep) levels.splice(0, levels.length - keep);
  };
  node.connect(meter);
  return {
    levels,
    windowMs,
    /** Forget what was measured so far (start a new measurement). */
    reset() {
      levels.length = 0;
    },
    close() {
      node.disconnect(meter);
      meter.port.close();
    },
  };
}

/** A linear RMS as dB relative to full scale. */
export const toDb = (rms) => 20 * Math.log10(Math.max(rms, 1e-9));
