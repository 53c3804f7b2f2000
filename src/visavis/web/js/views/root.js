// The root view: picks the screen from the store; overlays the ring view and call waiting.
import { html, Component } from "../ui.js";
import { inCallView, inRingView } from "../core/callstate.js";
import { AuthView } from "./auth.js";
import { Home } from "./home.js";
import { RingView, WaitingBanner } from "./ring.js";
import { CallView } from "./call.js";
import { GuestView } from "./guest.js";

export class Root extends Component {
  componentDidMount() {
    this.unsubscribe = this.props.app.store.subscribe(() => this.forceUpdate());
  }
  componentWillUnmount() {
    this.unsubscribe?.();
  }
  render({ app }) {
    const s = app.store.get();
    const call = s.call;
    let body;
    if (s.guest) body = inCallView(call) ? html`<${CallView} app=${app} s=${s} />` : html`<${GuestView} app=${app} s=${s} />`;
    else if (!s.session) body = html`<${AuthView} app=${app} error=${s.error} />`;
    else if (inRingView(call)) body = html`<${RingView} app=${app} call=${call} />`;
    else if (inCallView(call)) body = html`<${CallView} app=${app} s=${s} />`;
    else body = html`<${Home} app=${app} s=${s} />`;
    return html`<div class="app">
      <a class="skip" href="#main">Skip to content</a>
      ${body}
      ${s.waiting && html`<${WaitingBanner} app=${app} waiting=${s.waiting} />`}
      <div class="sr-only" aria-live="assertive" role="status">${s.announcement}</div>
    </div>`;
  }
}
