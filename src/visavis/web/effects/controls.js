// The effects' controls: in the call (<EffectsControls>, beside mute and camera) and before
// one (<EffectsSettings>, on the home screen). They render `app.effects` (client.js).
import { html, Component } from "../js/ui.js";
import { REACTIONS } from "./reactions.js";

const BACKGROUNDS = [
  ["off", "Off"],
  ["blur", "Blur"],
  ["portrait", "Portrait"],
];

class Subscribed extends Component {
  componentDidMount() {
    this.unsubscribe = this.props.app.effects?.subscribe(() => this.forceUpdate());
  }
  componentWillUnmount() {
    this.unsubscribe?.();
  }
}

/** Background, voice isolation, spatial audio and headphones: the person's choices. */
function Choices({ effects, group }) {
  const p = effects.prefs;
  return html`<div class="effects-choices">
    <fieldset class="segmented" aria-label="Background">
      <legend>Background</legend>
      ${BACKGROUNDS.map(
        ([mode, label]) => html`<button type="button" class=${p.video === mode ? "on" : ""}
          aria-pressed=${p.video === mode} data-effect=${`background-${mode}`}
          onClick=${() => effects.setVideoMode(mode)}>${label}</button>`,
      )}
    </fieldset>
    <label><input type="checkbox" checked=${p.voiceIsolation} data-effect="voice-isolation"
      onChange=${(e) => effects.setVoiceIsolation(e.currentTarget.checked)} /> Voice isolation</label>
    <label><input type="checkbox" checked=${p.spatial} data-effect="spatial"
      onChange=${(e) => effects.setSpatial(e.currentTarget.checked)} /> Spatial audio in group calls</label>
    <label><input type="checkbox" checked=${p.headphones} data-effect="headphones"
      onChange=${(e) => effects.setHeadphones(e.currentTarget.checked)} /> I'm wearing headphones</label>
    ${group && effects.spatialActive && html`<p class="muted">Voices come from their tiles.</p>`}
    ${effects.note && html`<p class="muted effects-note" role="status">${effects.note}</p>`}
  </div>`;
}

/** Why an effect gave up (it cannot run on this device or browser), until dismissed. */
function Notice({ effects }) {
  if (!effects.notice) return null;
  // (announced by the client's live region when it appears: tell() in client.js)
  return html`<div class="effects-notice" data-effects-notice>
    <span>${effects.notice}</span>
    <button type="button" onClick=${() => effects.dismissNotice()}>Dismiss</button>
  </div>`;
}

/** In the call: an "Effects" panel and a "React" menu (Alt+1…Alt+8 work too). */
export class EffectsControls extends Subscribed {
  constructor() {
    super();
    this.state = { open: null }; // "effects" | "react" | null
  }
  toggle(panel) {
    this.setState({ open: this.state.open === panel ? null : panel });
  }
  render({ app, group }) {
    const effects = app.effects;
    if (!effects) return null;
    const open = this.state.open;
    return html`<div class="effects-controls">
      ${open !== "effects" && html`<${Notice} effects=${effects} />`}
      <button class="round" aria-expanded=${open === "effects"} aria-controls="effects-panel"
        data-action="effects" onClick=${() => this.toggle("effects")}>
        <span class="icon effects-icon" aria-hidden="true">✦</span><span>Effects</span>
      </button>
      <button class="round" aria-expanded=${open === "react"} aria-controls="reactions-menu"
        data-action="react" disabled=${!effects.canReact} onClick=${() => this.toggle("react")}>
        <span class="icon effects-icon" aria-hidden="true">♥</span><span>React</span>
      </button>
      ${open === "effects" && html`<div class="effects-panel" id="effects-panel" role="group" aria-label="Effects">
        <${Choices} effects=${effects} group=${group} />
      </div>`}
      ${open === "react" && html`<div class="effects-panel reactions-menu" id="reactions-menu" role="menu" aria-label="Reactions">
        ${REACTIONS.map(
          (r) => html`<button type="button" role="menuitem" data-reaction=${r.kind}
            aria-keyshortcuts=${`Alt+${r.key}`} title=${`${r.label} (Alt+${r.key})`}
            onClick=${() => {
              effects.react(r.kind);
              this.setState({ open: null });
            }}>${r.label}</button>`,
        )}
      </div>`}
    </div>`;
  }
}

/** Before a call (home screen): the same choices, remembered on this device. */
export class EffectsSettings extends Subscribed {
  render({ app }) {
    if (!app.effects) return null;
    return html`<section class="card effects-settings" aria-label="Effects">
      <h2>Effects</h2>
      <${Notice} effects=${app.effects} />
      <${Choices} effects=${app.effects} group=${false} />
    </section>`;
  }
}
