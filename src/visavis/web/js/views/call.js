// The call on screen: the other person (1:1) or the grid (group), the self view, status,
// connection quality, and the controls (mute, camera, switch camera, add, end).
import { html, Component, Video, Audio, initials, createRef } from "../ui.js";
import { describe } from "../core/callstate.js";
import { layoutGrid, layersFor, DominantHold } from "../core/grid.js";
import { LEVEL_LABELS } from "../call/quality.js";
import { Icon } from "./icons.js";
import { EffectsControls } from "../../effects/controls.js";
import { Security } from "../../e2ee/view.js";

const SCREEN_SUFFIX = ":screen"; // a screen tile's id: "<participant id>:screen"
const streams = new WeakMap();
function streamOf(track) {
  if (!track) return null;
  if (!streams.has(track)) streams.set(track, new MediaStream([track]));
  return streams.get(track);
}

function Quality({ quality }) {
  if (!quality) return null;
  const detail = [quality.rtt != null ? `${quality.rtt} ms` : null, `${(quality.loss * 100).toFixed(1)}% loss`, `${quality.kbpsIn} kbit/s`].filter(Boolean).join(" · ");
  return html`<span class=${`quality ${quality.level}`} title=${detail} aria-label=${`${LEVEL_LABELS[quality.level]}: ${detail}`}>
    <span class="bars" aria-hidden="true"><i></i><i></i><i></i></span>${LEVEL_LABELS[quality.level]}
  </span>`;
}

class AddPerson extends Component {
  submit(event) {
    event.preventDefault();
    const handle = new FormData(event.currentTarget).get("handle");
    if (handle) this.props.app.addPerson(String(handle).trim());
    this.props.onDone();
  }
  render() {
    return html`<form class="add-person" onSubmit=${(e) => this.submit(e)}>
      <label>Add someone to this call<input name="handle" type="text" placeholder="handle" required autofocus /></label>
      <button class="primary" type="submit">Ring</button>
      <button type="button" onClick=${this.props.onDone}>Cancel</button>
    </form>`;
  }
}

function Roster({ app, roster, me }) {
  const others = Object.values(roster).filter((p) => p.user.handle !== me && p.state !== "joined");
  if (!others.length) return null;
  return html`<ul class="roster" aria-label="Not in the call">
    ${others.map(
      (p) => html`<li key=${p.user.handle}>
        <span>${p.user.display_name}</span> <span class="muted">${p.state}</span>
        ${p.state !== "ringing" && html`<button class="small" onClick=${() => app.ringAgain(p.user.handle)}>Ring again</button>`}
      </li>`,
    )}
  </ul>`;
}

/** Guests of a call link waiting to come in: admit or refuse each. */
function Lobby({ app, s }) {
  const waiting = Object.values(s.lobby).filter((g) => g.state === "waiting" && g.callId === s.call.callId);
  if (!waiting.length) return null;
  return html`<ul class="lobby" aria-label="Waiting to join">
    ${waiting.map(
      (g) => html`<li key=${g.id}>
        <span><strong>${g.display_name}</strong> (guest) is waiting to join</span>
        <button class="small" onClick=${() => app.admitGuest(g.id, false)} aria-label=${`Refuse ${g.display_name}`}>Refuse</button>
        <button class="primary small" onClick=${() => app.admitGuest(g.id)} aria-label=${`Admit ${g.display_name}`}>Admit</button>
      </li>`,
    )}
  </ul>`;
}

export class CallView extends Component {
  constructor() {
    super();
    this.state = { adding: false, viewport: { width: window.innerWidth, height: window.innerHeight } };
    this.hold = new DominantHold();
    this.onResize = () => this.setState({ viewport: { width: window.innerWidth, height: window.innerHeight } });
    // The size of every tile on screen, as the browser laid it out (ResizeObserver: no
    // forced layout), decides which participants are thumbnails for the SFU.
    this.gridRef = createRef();
    this.sizes = new Map(); // tile element → {width, height} (CSS px)
    this.resized = typeof ResizeObserver === "function" ? new ResizeObserver((entries) => this.tilesResized(entries)) : null;
  }
  componentDidMount() {
    window.addEventListener("resize", this.onResize);
    this.reportLayout();
  }
  componentDidUpdate() {
    this.reportLayout();
  }
  componentWillUnmount() {
    window.removeEventListener("resize", this.onResize);
    this.resized?.disconnect();
  }

  tilesResized(entries) {
    for (const e of entries) this.sizes.set(e.target, { width: e.contentRect.width, height: e.contentRect.height });
    this.reportLayout();
  }

  /** Tell the SFU (through the app) which participants are on screen, and which of them
   * only as small tiles (js/core/grid.js layersFor). Watches new tiles' sizes. */
  reportLayout() {
    const grid = this.gridRef.current;
    for (const el of this.sizes.keys()) {
      if (el.isConnected && el.parentNode === grid) continue;
      this.resized?.unobserve(el);
      this.sizes.delete(el);
    }
    if (!grid) return;
    const tiles = [];
    for (const el of grid.querySelectorAll(":scope > figure.tile")) {
      if (!this.sizes.has(el)) {
        this.sizes.set(el, null);
        this.resized?.observe(el);
      }
      const size = this.sizes.get(el);
      const id = el.dataset.participant ?? el.dataset.screenOf;
      tiles.push({ id, width: size?.width ?? null, height: size?.height ?? null, large: el.classList.contains("large") });
    }
    // A new tile is measured before the next paint: wait for it rather than ask for a
    // layer that is switched again a moment later.
    if (this.resized && tiles.some((t) => t.width == null)) return;
    const { visible, thumbnails } = layersFor(tiles, window.devicePixelRatio || 1);
    this.props.app.setLayout(visible, thumbnails);
  }

  grid(s) {
    const ids = s.tiles.map((t) => t.participant_id);
    if (this.hold.current && !ids.includes(this.hold.current)) this.hold.current = null;
    const dominant = this.hold.update(s.dominant && ids.includes(s.dominant) ? s.dominant : this.hold.current, performance.now());
    // A shared screen is a tile of its own, first and large (the newest share if several);
    // `data-screen-of`, not `data-participant`: effects/ places a participant's audio at
    // their camera tile.
    const screens = s.tiles.filter((t) => t.screen).map((t) => ({ ...t, id: `${t.participant_id}${SCREEN_SUFFIX}` }));
    const tiles = [...screens, ...s.tiles.map((t) => ({ ...t, id: t.participant_id }))];
    const layout = layoutGrid(tiles.map((t) => t.id), dominant, this.state.viewport, screens.at(-1)?.id ?? null);
    // (the SFU hears of the tiles shown once they are laid out: reportLayout)
    const byId = new Map(tiles.map((t) => [t.id, t]));
    return html`<div class="grid" ref=${this.gridRef} role="group" style=${`--cols:${layout.columns};--rows:${layout.rows}`} aria-label="Participants">
      ${layout.visible.map((id) => {
        const t = byId.get(id);
        const large = layout.large === id;
        const who = `${t.user}${t.guest ? " (guest)" : ""}`;
        if (id.endsWith(SCREEN_SUFFIX)) {
          return html`<figure key=${id} class=${`tile screen${large ? " large" : ""}`} data-screen-of=${t.participant_id}>
            <${Video} stream=${streamOf(t.screen)} muted label=${`${t.user}'s screen`} />
            <figcaption>${who}'s screen</figcaption>
          </figure>`;
        }
        return html`<figure key=${id} class=${`tile${large ? " large" : ""}${id === dominant ? " speaking" : ""}`} data-participant=${id}>
          ${t.video ? html`<${Video} stream=${streamOf(t.video)} muted label=${`${t.user}'s video`} />` : html`<div class="avatar" aria-hidden="true">${initials(t.user)}</div>`}
          <figcaption>${who}</figcaption>
        </figure>`;
      })}
      ${layout.offscreen.length > 0 && html`<div class="tile more"><span aria-hidden="true">+${layout.offscreen.length}</span><span class="sr-only">${layout.offscreen.length} more people off screen</span></div>`}
      ${s.tiles.map((t) => t.audio && html`<${Audio} key=${`a-${t.participant_id}`} track=${t.audio} />`)}
    </div>`;
  }

  render({ app, s }) {
    const call = s.call;
    const peer = call.peer ?? {};
    const live = call.phase === "in_call" || call.phase === "connecting" || call.phase === "reconnecting";
    const hasRemoteVideo = s.remoteStream?.getVideoTracks().length > 0;
    return html`<main class=${`call phase-${call.phase}`} id="main" aria-label="Call">
      <header class="call-top">
        <div>
          <h2>${peer.display_name}</h2>
          <p class="call-status" role="status">${describe(call)}${call.phase === "ringing" && s.ringingDevices > 0 ? ` (${s.ringingDevices} device${s.ringingDevices > 1 ? "s" : ""})` : ""}</p>
        </div>
        <${Quality} quality=${call.phase === "in_call" ? s.quality : null} />
      </header>
      <${Security} app=${app} e2ee=${s.e2ee} error=${s.error} phase=${call.phase} />
      <div class="stage">
        ${call.group
          ? this.grid(s)
          : s.remoteScreen
            ? html`<${Video} className="remote screen" stream=${s.remoteScreen} muted label=${`${peer.display_name}'s screen`} />
                <${Video} className=${`remote-camera${hasRemoteVideo ? "" : " hidden-audio"}`} stream=${s.remoteStream} label=${`${peer.display_name}'s video`} />`
            : hasRemoteVideo
              ? html`<${Video} className="remote" stream=${s.remoteStream} label=${`${peer.display_name}'s video`} />`
              : html`<div class="remote placeholder"><div class="avatar huge" aria-hidden="true">${initials(peer.display_name)}</div>
                  ${s.remoteStream && html`<${Video} className="hidden-audio" stream=${s.remoteStream} label="call audio" />`}</div>`}
        ${s.localStream && s.localStream.getVideoTracks().length > 0 && !s.cameraOff && html`<${Video} className="self" stream=${s.localStream} muted mirror label="Your camera" />`}
      </div>
      ${call.group && s.session && html`<${Roster} app=${app} roster=${s.roster} me=${s.session.user.handle} />`}
      ${s.session && html`<${Lobby} app=${app} s=${s} />`}
      ${this.state.adding && html`<${AddPerson} app=${app} onDone=${() => this.setState({ adding: false })} />`}
      <nav class="controls" aria-label="Call controls">
        <button class=${`round ${s.muted ? "off" : ""}`} aria-pressed=${s.muted} onClick=${() => app.toggleMute()} data-action="mute">
          <${Icon} name=${s.muted ? "micOff" : "mic"} /><span>${s.muted ? "Unmute" : "Mute"}</span>
        </button>
        <button class=${`round ${s.cameraOff ? "off" : ""}`} aria-pressed=${s.cameraOff} onClick=${() => app.toggleCamera()} data-action="camera">
          <${Icon} name=${s.cameraOff ? "videoOff" : "video"} /><span>${s.cameraOff ? "Camera on" : "Camera off"}</span>
        </button>
        <button class="round" onClick=${() => app.switchCamera()} data-action="switch-camera"><${Icon} name="switchCam" /><span>Switch camera</span></button>
        ${live && navigator.mediaDevices?.getDisplayMedia && html`<button class=${`round ${s.sharing ? "off" : ""}`} aria-pressed=${s.sharing} onClick=${() => app.toggleScreenShare()} data-action="share">
          <${Icon} name="screen" /><span>${s.sharing ? "Stop sharing" : "Share screen"}</span></button>`}
        ${live && s.session && html`<button class="round" onClick=${() => this.setState({ adding: true })} data-action="add"><${Icon} name="add" /><span>Add person</span></button>`}
        <${EffectsControls} app=${app} group=${Boolean(call.group)} />
        <button class="round end" onClick=${() => app.hangUp()} data-action="end" disabled=${call.phase === "ended"}><${Icon} name="end" /><span>${call.phase === "ringing" ? "Cancel" : "End"}</span></button>
      </nav>
    </main>`;
  }
}
