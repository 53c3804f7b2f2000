// The full-screen incoming call: who calls, answer with video / audio only / decline.
import { html, initials, Component, createRef } from "../ui.js";
import { describe } from "../core/callstate.js";
import { Icon } from "./icons.js";

export class RingView extends Component {
  constructor() {
    super();
    this.answer = createRef();
  }
  // `autofocus` works once per page load: a ring that comes later focuses "Video" here,
  // so Enter answers (keyboard only) and a screen reader lands in the dialog.
  componentDidMount() {
    this.answer.current?.focus();
  }
  render(props) {
    return ring(props, this.answer);
  }
}

function ring({ app, call }, answerRef) {
  const peer = call.peer ?? {};
  const ringing = call.phase === "ringing";
  return html`<section class="ring" id="main" role="alertdialog" aria-modal="true" aria-labelledby="ring-title" aria-describedby="ring-status">
    <div class="avatar huge" aria-hidden="true">${initials(peer.display_name)}</div>
    <h2 id="ring-title">${peer.display_name}</h2>
    <p class="muted">${peer.handle}</p>
    <p id="ring-status" class="ring-status">${describe(call)}</p>
    ${ringing &&
    html`<div class="ring-actions">
      <button class="round decline" data-action="decline" onClick=${() => app.decline()}><${Icon} name="end" /><span>Decline</span></button>
      <button class="round answer-audio" data-action="answer-audio" onClick=${() => app.answer("audio")}><${Icon} name="phone" /><span>Audio only</span></button>
      <button class="round answer" data-action="answer-video" onClick=${() => app.answer("video")} ref=${answerRef}><${Icon} name="video" /><span>Video</span></button>
    </div>`}
  </section>`;
}

/** Call waiting: an incoming call while in a call. */
export function WaitingBanner({ app, waiting }) {
  return html`<div class="waiting" role="alertdialog" aria-labelledby="waiting-title">
    <p id="waiting-title"><strong>${waiting.caller.display_name}</strong> is calling</p>
    <button class="danger" onClick=${() => app.declineWaiting()}>Decline</button>
    <button class="primary" onClick=${() => app.endAndAnswer(waiting.media)}>End and answer</button>
  </div>`;
}
