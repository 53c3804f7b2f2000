// Harness for effects/spatial.js: two remote speakers (tones through a real peer
// connection, 440 and 660 Hz) on the left and right tiles of a grid; the mixer's stereo
// output measured per speaker.
import { createSpatialMixer } from "/effects/spatial.js";
import { levels, loopback } from "./audio.js";
import "./common.js";

let ctx = null;
let mixer = null;
let out = null;

window.run = async () => {
  ctx = new AudioContext({ sampleRate: 48000 });
  const tones = {};
  for (const [id, frequency] of [["ann", 440], ["bob", 660]]) {
    const osc = new OscillatorNode(ctx, { frequency });
    const dest = ctx.createMediaStreamDestination();
    osc.connect(new GainNode(ctx, { gain: 0.3 })).connect(dest);
    osc.start();
    tones[id] = dest.stream.getAudioTracks()[0];
  }
  const [ann, bob] = await loopback([tones.ann, tones.bob]);
  out = ctx.createGain();
  out.channelCount = 2;
  out.channelCountMode = "explicit";
  mixer = createSpatialMixer(ctx, { destination: out });
  mixer.add("ann", ann);
  mixer.add("bob", bob);
  const grid = document.getElementById("grid");
  const stop = mixer.followTiles(grid);
  window.stopFollowing = stop;
  return mixer.positions();
};

/** Per speaker, the mean level of the left and right output channels over `ms`. Both
 *  speakers play all along; each is told apart by its tone (band-pass filters at 440 and
 *  660 Hz on each channel), so no timing of who speaks when is involved. */
window.measure = async (ms = 1500) => {
  const split = ctx.createChannelSplitter(2);
  const merge = ctx.createChannelMerger(4);
  out.connect(split);
  const bands = [440, 660];
  for (let channel = 0; channel < 2; channel++) {
    bands.forEach((frequency, i) => {
      const band = new BiquadFilterNode(ctx, { type: "bandpass", frequency, Q: 30 });
      split.connect(band, channel).connect(merge, 0, i * 2 + channel);
    });
  }
  // The first 200 ms (10 windows) are the filters settling.
  const windows = (await levels(ctx, merge, 4, ms + 200)).slice(10);
  out.disconnect(split);
  const mean = (c) => Math.sqrt(windows.reduce((s, w) => s + w[c] * w[c], 0) / windows.length);
  return {
    ann: { left: mean(0), right: mean(1) },
    bob: { left: mean(2), right: mean(3) },
    windows: windows.length,
  };
};

window.setHeadphones = (on) => mixer.setHeadphones(on);
window.setEnabled = (on) => mixer.setEnabled(on);
window.positions = () => mixer.positions();
/** Swap the two tiles in the grid (the mixer follows). */
window.swapTiles = () => {
  const grid = document.getElementById("grid");
  grid.append(grid.firstElementChild);
};
