// Harness for effects/voice.js: the fake microphone (speech + noise) sent through a real
// peer connection twice, once with voice isolation on and once with it off; the received
// audio measured side by side (channel 0: on, channel 1: off).
import { createVoiceIsolation, micConstraints, SAMPLE_RATE } from "/effects/voice.js";
import { levels, loopback } from "./audio.js";
import "./common.js";

let on = null;
let off = null;
let mic = null;

window.run = async (ms) => {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: micConstraints(true) });
  mic = stream.getAudioTracks()[0];
  const ctx = new AudioContext({ sampleRate: SAMPLE_RATE });
  on = await createVoiceIsolation(mic, { context: ctx });
  off = await createVoiceIsolation(mic.clone(), { context: ctx, enabled: false });
  const [onReceived, offReceived] = await loopback([on.track, off.track]);
  const merger = ctx.createChannelMerger(2);
  ctx.createMediaStreamSource(new MediaStream([onReceived])).connect(merger, 0, 0);
  ctx.createMediaStreamSource(new MediaStream([offReceived])).connect(merger, 0, 1);
  return {
    levels: await levels(ctx, merger, 2, ms),
    sampleRate: ctx.sampleRate,
    on: { ...on.stats },
    off: { ...off.stats },
    micSettings: mic.getSettings(),
  };
};

/** The toggle on a live effect: off, then on again; the stats after each. */
window.toggle = async () => {
  await on.setEnabled(false);
  const disabled = { ...on.stats };
  await on.setEnabled(true);
  return { disabled, enabled: { ...on.stats } };
};
