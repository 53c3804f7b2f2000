// Sign in / create an account, and name this device.
import { html, Component } from "../ui.js";
import { defaultDeviceName } from "../app.js";

export class AuthView extends Component {
  constructor() {
    super();
    this.state = { mode: "signin", busy: false, error: "" };
  }

  async submit(event) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const app = this.props.app;
    this.setState({ busy: true, error: "" });
    try {
      const handle = String(form.get("handle") || "");
      const password = String(form.get("password") || "");
      const device = String(form.get("device") || "") || defaultDeviceName();
      if (this.state.mode === "signup") await app.signUp(handle, password, String(form.get("name") || ""), device);
      else await app.signIn(handle, password, device);
    } catch (err) {
      this.setState({ error: err.message || String(err) });
    } finally {
      this.setState({ busy: false });
    }
  }

  render({ error: appError }, { mode, busy, error }) {
    const signup = mode === "signup";
    const message = error || appError;
    return html`<main class="auth" id="main">
      <div class="auth-card">
        <h1 class="brand"><span class="logo" aria-hidden="true"></span>visavis</h1>
        <p class="muted">Private video calls, on your own server.</p>
        <div class="segmented" role="tablist" aria-label="Account">
          <button role="tab" aria-selected=${!signup} class=${!signup ? "on" : ""} onClick=${() => this.setState({ mode: "signin", error: "" })}>Sign in</button>
          <button role="tab" aria-selected=${signup} class=${signup ? "on" : ""} onClick=${() => this.setState({ mode: "signup", error: "" })}>Create account</button>
        </div>
        <form onSubmit=${(e) => this.submit(e)} aria-describedby=${message ? "auth-error" : undefined}>
          <label>Handle (email or phone)<input name="handle" type="text" autocomplete="username" required minlength="3" placeholder="you@example.com" /></label>
          ${signup && html`<label>Your name<input name="name" type="text" autocomplete="name" maxlength="100" placeholder="How others see you" /></label>`}
          <label>Password<input name="password" type="password" autocomplete=${signup ? "new-password" : "current-password"} required minlength=${signup ? 8 : 1} /></label>
          <label>Name this device<input name="device" type="text" maxlength="100" placeholder=${defaultDeviceName()} /></label>
          ${message && html`<p class="error" id="auth-error" role="alert">${message}</p>`}
          <button class="primary wide" type="submit" disabled=${busy}>${signup ? "Create account" : "Sign in"}</button>
        </form>
      </div>
    </main>`;
  }
}
