// Spatial audio for group calls: each remote voice comes from where its tile is on screen.
//
//   const mixer = createSpatialMixer(audioContext);
//   mixer.add(participantId, remoteStream);      // play it through the mixer, not an <audio>
//   mixer.placeTiles(grid);                      // x of every [data-participant-id] tile
//   const stop = mixer.followTiles(grid);        // ... and again whenever the grid changes
//   mixer.setEnabled(participants >= 3);         // off for 1:1: the voice comes from the centre
//   mixer.setHeadphones(true);                   // binaural (HRTF) instead of stereo panning
//
// Two renderings. On speakers, equal-power stereo panning, kept within ±0.7 so each voice
// is still heard from both speakers. On headphones, an HRTF panner places each voice on a
// half circle in front of the listener (interaural time and level differences, as FaceTime
// does with AirPods); HRTF sounds wrong on speakers, hence the toggle. Positions glide
// (60 ms time constant) so a grid change does not click.

const SPEAKER_WIDTH = 0.7;
const TILE_SELECTOR = "[data-participant-id], [data-participant]";
const GLIDE = 0.06;

/** x in [-1, 1] of the centre of `element` across `container`. */
export function tileX(element, container) {
  const box = container.getBoundingClientRect();
  const tile = element.getBoundingClientRect();
  if (!box.width) return 0;
  const x = ((tile.left + tile.width / 2 - box.left) / box.width) * 2 - 1;
  return Math.max(-1, Math.min(1, x));
}

/**
 * A mixer on `context` (its output goes to `destination`, the speakers by default).
 * Options: `enabled` (spatial placement on; off plays every voice centred), `headphones`.
 */
export function createSpatialMixer(
  context,
  { enabled = true, headphones = false, destination = context.destination } = {},
) {
  const voices = new Map(); // participantId -> {element, source, gain, stereo, hrtf, x}
  const state = { enabled, headphones };
  // Every voice meets here on its way out: what the listener hears (measured by the tests).
  const output = new GainNode(context, { channelCount: 2, channelCountMode: "explicit" });
  output.connect(destination);

  function wire(voice) {
    voice.gain.disconnect();
    voice.stereo.disconnect();
    voice.hrtf.disconnect();
    if (!state.enabled) voice.gain.connect(output);
    else if (state.headphones) voice.gain.connect(voice.hrtf).connect(output);
    else voice.gain.connect(voice.stereo).connect(output);
    aim(voice, false);
  }

  function aim(voice, glide = true) {
    const now = context.currentTime;
    const pan = voice.x * SPEAKER_WIDTH;
    // Azimuth on a half circle in front: x = -1 is 90° left, x = 1 is 90° right.
    const azimuth = (voice.x * Math.PI) / 2;
    const targets = [
      [voice.stereo.pan, pan],
      [voice.hrtf.positionX, Math.sin(azimuth)],
      [voice.hrtf.positionZ, -Math.cos(azimuth)],
    ];
    for (const [param, value] of targets) {
      if (glide) param.setTargetAtTime(value, now, GLIDE);
      else param.setValueAtTime(value, now);
    }
  }

  function streamOf(media) {
    return media instanceof MediaStream ? media : new MediaStream([media]);
  }

  return {
    state,
    /** The stereo mix of every voice (already connected to the destination). */
    output,
    /** A voice before it is placed (mono, as received), or null. */
    input: (participantId) => voices.get(participantId)?.gain ?? null,
    /** Play `media` (a remote MediaStream or audio track) for `participantId`. */
    add(participantId, media) {
      this.remove(participantId);
      const stream = streamOf(media);
      // Chromium delivers a remote WebRTC stream to Web Audio only while a media element
      // plays it; the element is muted, the mixer is what is heard.
      const element = new Audio();
      element.muted = true;
      element.srcObject = stream;
      element.play().catch(() => {});
      const source = context.createMediaStreamSource(stream);
      const gain = context.createGain();
      const stereo = context.createStereoPanner();
      const hrtf = new PannerNode(context, {
        panningModel: "HRTF",
        distanceModel: "linear",
        refDistance: 1,
        maxDistance: 10,
        rolloffFactor: 0,
        positionZ: -1,
      });
      source.connect(gain);
      const voice = { media, element, source, gain, stereo, hrtf, x: 0 };
      voices.set(participantId, voice);
      wire(voice);
      return voice;
    },
    remove(participantId) {
      const voice = voices.get(participantId);
      if (!voice) return;
      voices.delete(participantId);
      voice.source.disconnect();
      voice.gain.disconnect();
      voice.stereo.disconnect();
      voice.hrtf.disconnect();
      voice.element.srcObject = null;
    },
    has: (participantId) => voices.has(participantId),
    /** What was added for `participantId` (to tell whether its track changed). */
    media: (participantId) => voices.get(participantId)?.media ?? null,
    /** Place a voice at x in [-1, 1] (left edge to right edge of the grid). */
    place(participantId, x) {
      const voice = voices.get(participantId);
      if (!voice) return;
      voice.x = Math.max(-1, Math.min(1, Number(x) || 0));
      aim(voice);
    },
    positions() {
      return Object.fromEntries([...voices].map(([id, voice]) => [id, voice.x]));
    },
    /** Place every voice by its tile: elements matching `selector` inside `container`,
     *  whose `data-participant-id` (or `data-participant`) names the participant. */
    placeTiles(container, selector = TILE_SELECTOR) {
      for (const tile of container.querySelectorAll(selector)) {
        const id = tile.dataset.participantId ?? tile.dataset.participant;
        if (id) this.place(id, tileX(tile, container));
      }
    },
    /** placeTiles now and whenever the grid resizes or its tiles change; returns stop(). */
    followTiles(container, selector = TILE_SELECTOR) {
      const update = () => this.placeTiles(container, selector);
      const resize = new ResizeObserver(update);
      resize.observe(container);
      const mutations = new MutationObserver(update);
      mutations.observe(container, { childList: true, subtree: true, attributes: true,
        attributeFilter: ["class", "style", "data-participant-id", "data-participant"] });
      addEventListener("resize", update);
      update();
      return () => {
        resize.disconnect();
        mutations.disconnect();
        removeEventListener("resize", update);
      };
    },
    setEnabled(on) {
      state.enabled = Boolean(on);
      voices.forEach(wire);
    },
    setHeadphones(on) {
      state.headphones = Boolean(on);
      voices.forEach(wire);
    },
    close() {
      for (const id of [...voices.keys()]) this.remove(id);
      output.disconnect();
    },
  };
}
