// Preact + htm from vendor/ (no bundler, no build): `html` tagged templates render views.
import { h, render, Component, createRef } from "../vendor/preact/dist/preact.module.js";
import htm from "../vendor/htm/dist/htm.module.js";

export const html = htm.bind(h);
export { h, render, Component, createRef };

const PREFS_KEY = "visavis.media"; // call/media.js keeps the device choices here

/** Play through the speaker chosen in settings (where the browser can: setSinkId). */
function useSpeaker(el) {
  let speaker = null;
  try {
    speaker = JSON.parse(localStorage.getItem(PREFS_KEY) || "{}").speaker ?? null;
  } catch {
    speaker = null;
  }
  if (speaker && el.setSinkId && el.sinkId !== speaker) el.setSinkId(speaker).catch(() => {});
}

/** A media element whose source is set after every render by `sync()` (srcObject cannot be
 * set as an attribute). */
class MediaElement extends Component {
  constructor() {
    super();
    this.ref = createRef();
  }
  componentDidMount() {
    this.sync();
  }
  componentDidUpdate() {
    this.sync();
  }
}

/** A <video> showing a MediaStream. */
export class Video extends MediaElement {
  sync() {
    const el = this.ref.current;
    if (el && el.srcObject !== this.props.stream) {
      el.srcObject = this.props.stream ?? null;
      if (!this.props.muted) useSpeaker(el);
      if (this.props.stream) el.play?.().catch(() => {});
    }
  }
  render({ className, muted, label, mirror }) {
    return html`<video ref=${this.ref} class=${`${className ?? ""}${mirror ? " mirror" : ""}`} autoplay playsinline muted=${Boolean(muted)} aria-label=${label}></video>`;
  }
}

/** An <audio> playing a remote track (group calls: audio and video come in separate slots). */
export class Audio extends MediaElement {
  sync() {
    const el = this.ref.current;
    const track = this.props.track;
    if (el && el.__track !== track) {
      el.__track = track;
      el.srcObject = track ? new MediaStream([track]) : null;
      useSpeaker(el);
      if (track) el.play?.().catch(() => {});
    }
  }
  render() {
    return html`<audio ref=${this.ref} autoplay></audio>`;
  }
}

export function initials(name) {
  return (name || "?")
    .split(/[\s@._-]+/)
    .filter(Boolean)
    .slice(0, 2)
    .map((w) => w[0].toUpperCase())
    .join("");
}
