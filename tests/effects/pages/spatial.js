// Harness for effects/spatial.js: two remote speakers (tones through a real peer
// connection) on the left and right tiles of a grid; the mixer's stereo output measured.
import { createSpatialMixer } from "/effects/spatial.js";
import { levels, loopback } from "./audio.js";
import "./common.js";

let ctx = null;
let mixer = null;
let out = null;
const senders = {};

window.run = async () => {
  ctx = new AudioContext({ sampleRate: 48000 });
  const tones = {};
  for (const [id, frequency] of [["ann", 440], ["bob", 660]]) {
    const osc = new OscillatorNode(ctx, { frequency });
    const dest = ctx.createMediaStreamDestination();
    osc.connect(new GainNode(ctx, { gain: 0.3 })).connect(dest);
    osc.start();
    tones[id] = dest.stream.getAudioTracks()[0];
    senders[id] = tones[id];
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

/** Mean level of the left and right output channels over `ms` with only `speaker` on. */
window.measure = async (speaker, ms = 1500) => {
  for (const [id, track] of Object.entries(senders)) track.enabled = id === speaker;
  // The first 400 ms (20 windows) still carry the other speaker's sound in flight.
  const windows = (await levels(ctx, out, 2, ms + 400)).slice(20);
  const mean = (c) => Math.sqrt(windows.reduce((s, w) => s + w[c] * w[c], 0) / windows.length);
  return { left: mean(0), right: mean(1), windows: windows.length };
};

window.setHeadphones = (on) => mixer.setHeadphones(on);
window.setEnabled = (on) => mixer.setEnabled(on);
window.positions = () => mixer.positions();
/** Swap the two tiles in the grid (the mixer follows). */
window.swapTiles = () => {
  const grid = document.getElementById("grid");
  grid.append(grid.firstElementChild);
};
