// The call view's end-to-end encryption line: the verification code people compare
// aloud (the same on every device of the call unless a key was substituted), and the
// warning when a check failed (the call is stopped by then). A contact whose device key
// changed can be trusted again here, after checking with them.
import { html } from "../js/ui.js";

export function Security({ app, e2ee, error, phase }) {
  const changed = app.e2ee.changed;
  const warning = e2ee?.warning || (phase === "ended" && app.e2ee.lastWarning === error ? error : "");
  return html`<div class="e2ee" aria-label="End-to-end encryption">
    ${e2ee?.code && !warning && html`<p class="verification">
      <span>Verification code</span> <strong data-code=${e2ee.code}>${e2ee.code}</strong>
      <span class="muted">same on every screen? Then nobody is listening in.</span></p>`}
    ${e2ee && !e2ee.plain && !e2ee.code && !warning && phase !== "ended" && html`<p class="verification muted">Agreeing end-to-end keys…</p>`}
    ${e2ee?.guest && html`<p class="verification muted unverified">You joined as a guest: nobody's identity
      here is verified. Compare the code aloud to be sure.</p>`}
    ${!e2ee?.guest && e2ee?.guests?.length > 0 && html`<p class="verification muted unverified">
      Unverified guest${e2ee.guests.length > 1 ? "s" : ""}: ${e2ee.guests.join(", ")}. Compare the code aloud with them.</p>`}
    ${warning && html`<p class="error security-warning" role="alert">${warning}</p>`}
    ${warning && changed && html`<button class="small" onClick=${() => app.e2ee.acceptChanged(changed)}>
      I checked with ${changed.handle}: trust the new key</button>`}
  </div>`;
}
