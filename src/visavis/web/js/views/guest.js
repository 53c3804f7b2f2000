// A call link opened by someone without an account: a name, the lobby, and a clear page
// when the link cannot be used (revoked, expired, unknown) or the call is over.
import { html, Component } from "../ui.js";

const OVER = {
  refused: ["Not let in", "Nobody in the call let you in this time."],
  ended: ["The call has ended", "You can close this page."],
  left: ["You left the call", "You can close this page."],
};

export class GuestView extends Component {
  submit(event) {
    event.preventDefault();
    const name = String(new FormData(event.currentTarget).get("name") || "").trim();
    if (name) this.props.app.guestJoin(name);
  }

  body(app, g) {
    const owner = g.owner?.display_name;
    switch (g.phase) {
      case "loading":
        return html`<h2 id="guest-title">Opening the call link…</h2>`;
      case "form":
        return html`<h2 id="guest-title">${owner}'s call</h2>
          <p class="muted">Join without an account: say who you are, and someone in the call lets you in.</p>
          <form onSubmit=${(e) => this.submit(e)} aria-describedby=${g.error ? "guest-error" : undefined}>
            <label>Your name<input name="name" type="text" autocomplete="name" maxlength="60" required /></label>
            ${g.error && html`<p class="error" id="guest-error" role="alert">${g.error}</p>`}
            <button class="primary wide" type="submit">Ask to join</button>
          </form>`;
      case "waiting":
        return html`<h2 id="guest-title">${owner}'s call</h2>
          <p role="status" class="lobby-wait">Waiting for someone in the call to let you in, ${g.name}…</p>
          <button class="wide" onClick=${() => app.guestLeave()}>Leave</button>`;
      case "gone":
        return html`<h2 id="guest-title">This call link cannot be used</h2><p role="alert">${g.error}</p>`;
      default: {
        const [title, text] = OVER[g.phase] ?? OVER.ended;
        return html`<h2 id="guest-title">${title}</h2><p role="status">${text}</p>`;
      }
    }
  }

  render({ app, s }) {
    return html`<main class="auth guest" id="main" aria-labelledby="guest-title">
      <div class="auth-card">
        <h1 class="brand"><span class="logo" aria-hidden="true"></span>visavis</h1>
        ${this.body(app, s.guest)}
      </div>
    </main>`;
  }
}
