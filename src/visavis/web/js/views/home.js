// Home: find people, favourites, call history (missed calls marked), camera preview.
import { html, Component, Video, initials } from "../ui.js";
import { LocalMedia, QUALITIES, loadPrefs, savePrefs } from "../call/media.js";
import { Icon } from "./icons.js";
import { EffectsSettings } from "../../effects/controls.js";

function CallButtons({ app, contact }) {
  const go = (media) => app.call([contact.handle], media, [{ handle: contact.handle, display_name: contact.display_name }]);
  return html`<span class="call-buttons">
    <button class="icon-button" onClick=${() => go("audio")} aria-label=${`Audio call ${contact.display_name}`}><${Icon} name="phone" /></button>
    <button class="icon-button primary" onClick=${() => go("video")} aria-label=${`Video call ${contact.display_name}`}><${Icon} name="video" /></button>
  </span>`;
}

function Person({ app, contact, favourite, reachable }) {
  return html`<li class="person">
    <span class="avatar" aria-hidden="true">${initials(contact.display_name)}</span>
    <span class="who"><strong>${contact.display_name}</strong><span class="muted">${contact.handle}${reachable === undefined ? "" : reachable ? " · reachable" : " · not reachable now"}</span></span>
    <button class="icon-button" aria-pressed=${favourite} aria-label=${favourite ? `Remove ${contact.display_name} from favourites` : `Add ${contact.display_name} to favourites`} onClick=${() => app.toggleFavourite(contact)}>
      <${Icon} name=${favourite ? "star" : "starOutline"} />
    </button>
    <${CallButtons} app=${app} contact=${contact} />
  </li>`;
}

// Which camera, microphone and speaker this device uses (remembered in this browser).
const KINDS = [
  ["videoinput", "camera", "Camera"],
  ["audioinput", "mic", "Microphone"],
  ["audiooutput", "speaker", "Speaker"],
];

class DeviceChoice extends Component {
  constructor() {
    super();
    this.state = { devices: [] };
    this.onChange = () => this.load();
  }
  async load() {
    const devices = (await navigator.mediaDevices?.enumerateDevices?.().catch(() => [])) ?? [];
    this.setState({ devices });
  }
  componentDidMount() {
    this.load();
    navigator.mediaDevices?.addEventListener?.("devicechange", this.onChange);
  }
  componentWillUnmount() {
    navigator.mediaDevices?.removeEventListener?.("devicechange", this.onChange);
  }
  render(_, { devices }) {
    const prefs = loadPrefs();
    const canChooseSpeaker = "setSinkId" in HTMLMediaElement.prototype;
    return KINDS.map(([kind, key, label]) => {
      const options = devices.filter((d) => d.kind === kind && d.deviceId);
      if (!options.length || (kind === "audiooutput" && !canChooseSpeaker)) return null;
      return html`<label class="select" key=${key}>${label}
        <select data-choice=${key} onChange=${(e) => savePrefs({ [key]: e.currentTarget.value || null })}>
          <option value="" selected=${!prefs[key]}>System default</option>
          ${options.map((d, i) => html`<option value=${d.deviceId} selected=${prefs[key] === d.deviceId}>${d.label || `${label} ${i + 1}`}</option>`)}
        </select>
      </label>`;
    });
  }
}

class Preview extends Component {
  constructor() {
    super();
    this.state = { stream: null, error: "" };
  }
  async toggle() {
    if (this.media) {
      this.media.stop();
      this.media = null;
      this.setState({ stream: null });
      return;
    }
    this.media = new LocalMedia();
    try {
      this.setState({ stream: await this.media.start({ audio: false, video: true }), error: "" });
    } catch (err) {
      this.media = null;
      this.setState({ error: `Cannot open the camera: ${err.message}` });
    }
  }
  componentWillUnmount() {
    this.media?.stop();
  }
  render(_, { stream, error }) {
    return html`<section class="card preview" aria-labelledby="preview-title">
      <h2 id="preview-title">Camera</h2>
      ${stream ? html`<${Video} className="preview-video" stream=${stream} muted mirror label="Camera preview" />` : html`<p class="muted">See how you look before you call.</p>`}
      ${error && html`<p class="error" role="alert">${error}</p>`}
      <div class="inline">
        <button onClick=${() => this.toggle()}>${stream ? "Stop preview" : "Preview camera"}</button>
        <${DeviceChoice} />
        <label class="select">Camera quality
          <select onChange=${(e) => savePrefs({ maxHeight: Number(e.currentTarget.value) })}>
            ${QUALITIES.map((q) => html`<option value=${q} selected=${(loadPrefs().maxHeight ?? 1080) === q}>up to ${q}p</option>`)}
          </select>
        </label>
      </div>
    </section>`;
  }
}

/** Call links: made here, shared by hand; people without an account join through them. */
function CallLinks({ app, s }) {
  const waiting = Object.values(s.lobby).filter((g) => g.state === "waiting" && !g.callId);
  return html`<section class="card" aria-labelledby="links-title">
    <h2 id="links-title">Call links</h2>
    <p class="muted">Anyone with a link can ask to join your call, without an account; you let them in.</p>
    ${waiting.map(
      (g) => html`<p class="banner lobby-notice" role="status" key=${g.id}>
        <span><strong>${g.display_name}</strong> is waiting on your call link</span>
        <button class="primary small" onClick=${() => app.openLink(g.linkId)}>Open the call</button>
      </p>`,
    )}
    <ul class="links">
      ${s.links.map(
        (l) => html`<li key=${l.id} data-link=${l.id}>
          ${l.url
            ? html`<label class="grow">Call link<input type="text" readonly value=${l.url} onFocus=${(e) => e.currentTarget.select()} /></label>`
            : html`<span class="grow muted">Made on another device</span>`}
          <span class="muted">until ${new Date(l.expires_at * 1000).toLocaleString()}${l.call_id ? " · call going on" : ""}</span>
          <span class="inline">
            ${l.url && navigator.clipboard && html`<button class="small" onClick=${() => navigator.clipboard.writeText(l.url).then(() => app.announce("Link copied"))}>Copy</button>`}
            <button class="primary small" onClick=${() => app.openLink(l.id)}>Open the call</button>
            <button class="danger small" onClick=${() => app.revokeLink(l.id)} aria-label="Turn off this call link">Turn off</button>
          </span>
        </li>`,
      )}
    </ul>
    <button onClick=${() => app.createLink()}>Make a call link</button>
  </section>`;
}

class Contacts extends Component {
  async find(event) {
    event.preventDefault();
    const handle = String(new FormData(event.currentTarget).get("handle") || "").trim();
    if (handle) await this.props.app.findContact(handle);
  }
  group(event) {
    event.preventDefault();
    const handles = String(new FormData(event.currentTarget).get("handles") || "")
      .split(/[,\s]+/)
      .filter(Boolean);
    if (handles.length) this.props.app.call(handles, "video");
  }
  render({ app, s }) {
    const fav = (h) => s.favourites.some((f) => f.handle === h);
    return html`<div class="columns">
      <div>
        <section class="card" aria-labelledby="find-title">
          <h2 id="find-title">Call someone</h2>
          <form class="inline" onSubmit=${(e) => this.find(e)} role="search">
            <label class="grow">Handle<input name="handle" type="search" placeholder="name@example.com or +15551234567" required /></label>
            <button class="primary" type="submit">Find</button>
          </form>
          ${s.error && html`<p class="error" role="alert">${s.error}</p>`}
          ${s.contact && html`<ul class="people" aria-label="Found"><${Person} app=${app} contact=${s.contact} favourite=${fav(s.contact.handle)} reachable=${s.contact.reachable} /></ul>`}
        </section>
        <section class="card" aria-labelledby="fav-title">
          <h2 id="fav-title">Favourites</h2>
          ${s.favourites.length
            ? html`<ul class="people">${s.favourites.map((f) => html`<${Person} key=${f.handle} app=${app} contact=${f} favourite=${true} />`)}</ul>`
            : html`<p class="muted">Star someone to keep them here.</p>`}
        </section>
        <section class="card" aria-labelledby="group-title">
          <h2 id="group-title">Group call</h2>
          <form class="inline" onSubmit=${(e) => this.group(e)}>
            <label class="grow">Handles, separated by commas<input name="handles" type="text" placeholder="ann@example.com, bob@example.com" required /></label>
            <button class="primary" type="submit">Call all</button>
          </form>
        </section>
      </div>
      <div><${CallLinks} app=${app} s=${s} /><${Preview} /><${EffectsSettings} app=${app} /></div>
    </div>`;
  }
}

function when(ts) {
  const d = new Date(ts * 1000);
  const today = new Date();
  return d.toDateString() === today.toDateString() ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : d.toLocaleDateString();
}

function duration(seconds) {
  if (!seconds) return "";
  const m = Math.floor(seconds / 60);
  const s = Math.round(seconds % 60);
  return `${m}:${String(s).padStart(2, "0")}`;
}

export function History({ app, s }) {
  const me = s.session.user.handle;
  if (!s.history.length) return html`<section class="card"><h2>History</h2><p class="muted">No calls yet.</p></section>`;
  return html`<section class="card" aria-labelledby="history-title">
    <h2 id="history-title">History</h2>
    <ul class="history">
      ${s.history.map((h) => {
        const others = h.participants.filter((p) => p.user.handle !== me).map((p) => p.user);
        // guests of a call link (no account: nobody to call back)
        const names = [...others.map((u) => u.display_name), ...(h.guests ?? []).map((g) => `${g.display_name} (guest)`)];
        const missed = h.state === "missed" && h.direction === "incoming";
        const label = `${h.direction === "incoming" ? "Incoming" : "Outgoing"} ${h.media} call, ${h.state}`;
        return html`<li key=${h.call_id} class=${missed ? "missed" : ""} data-state=${h.state} data-direction=${h.direction}>
          <span class="avatar" aria-hidden="true">${initials(names[0])}</span>
          <span class="who"><strong>${names.join(", ") || "—"}</strong>
            <span class="muted">${label}${h.duration ? ` · ${duration(h.duration)}` : ""}</span></span>
          <time class="muted">${when(h.started_at)}</time>
          ${others.length > 0 && html`<button class="icon-button" aria-label=${`Call ${others.map((u) => u.display_name).join(", ")} back`} onClick=${() => app.call(others.map((u) => u.handle), h.media, others)}><${Icon} name=${h.media === "audio" ? "phone" : "video"} /></button>`}
        </li>`;
      })}
    </ul>
  </section>`;
}

export function Devices({ app, s }) {
  return html`<section class="card" aria-labelledby="devices-title">
    <h2 id="devices-title">Your devices</h2>
    ${s.error && html`<p class="error" role="alert">${s.error}</p>`}
    <p>
      <button onClick=${() => app.enablePush()} disabled=${Boolean(s.pushEnabled)}>
        ${s.pushEnabled ? "This device rings when visavis is closed" : "Ring this device when visavis is closed"}
      </button>
    </p>
    <ul class="devices">
      ${s.devices.map(
        (d) => html`<li key=${d.id} data-device=${d.id}>
          <span class=${`dot ${d.online ? "online" : ""}`} aria-hidden="true"></span>
          <span class="who"><strong>${d.name}</strong><span class="muted">${d.kind} · ${d.online ? "online" : "offline"}${d.current ? " · this device" : ""}</span></span>
          ${d.current
            ? html`<button onClick=${() => app.signOut()}>Sign out</button>`
            : html`<button class="danger" onClick=${() => app.revokeDevice(d.id)} aria-label=${`Sign out ${d.name}`}>Sign out</button>`}
        </li>`,
      )}
    </ul>
  </section>`;
}

export function Home({ app, s }) {
  const tabs = [
    ["contacts", "Contacts"],
    ["history", "History"],
    ["devices", "Devices"],
  ];
  const current = s.screen === "devices" ? "devices" : s.tab;
  return html`<div class="home">
    <header class="topbar">
      <span class="brand small"><span class="logo" aria-hidden="true"></span>visavis</span>
      <nav aria-label="Sections">
        ${tabs.map(
          ([id, label]) => html`<button class=${`tab ${current === id ? "on" : ""}`} aria-current=${current === id ? "page" : undefined}
            onClick=${() => (id === "devices" ? app.go("devices") : app.go("home", id))}>
            ${label}${id === "history" && s.missedUnseen > 0 && html` <span class="badge" aria-label=${`${s.missedUnseen} missed`}>${s.missedUnseen}</span>`}
          </button>`,
        )}
      </nav>
      <span class="me">
        <span class=${`dot ${s.status === "online" ? "online" : ""}`} aria-hidden="true"></span>
        <span class="me-name">${s.session.user.display_name}</span>
        <button class="link" onClick=${() => app.signOut()}>Sign out</button>
      </span>
    </header>
    ${s.status === "replaced" &&
    html`<div class="banner" role="status">visavis is open in another tab. <button class="primary small" onClick=${() => app.useHere()}>Use here</button></div>`}
    ${s.elsewhere &&
    html`<div class="banner handoff" role="status">
      <span>In a call on another device with ${s.elsewhere.participants.filter((p) => p.user.handle !== s.session.user.handle).map((p) => p.user.display_name).join(", ")}</span>
      <button class="primary small" onClick=${() => app.moveCallHere()}>Move call here</button>
    </div>`}
    <main id="main">
      ${current === "contacts" && html`<${Contacts} app=${app} s=${s} />`}
      ${current === "history" && html`<${History} app=${app} s=${s} />`}
      ${current === "devices" && html`<${Devices} app=${app} s=${s} />`}
    </main>
  </div>`;
}
