// The call state machine of this tab: pure, no I/O, no clock of its own (time is passed in).
//
// Theory of operation. A tab has at most one current call. Its phase moves
//   idle → ringing → connecting → in_call ⇄ reconnecting → ended → idle
// "ringing" is both an incoming ring on this device (direction "in") and an outgoing
// call whose callee has not answered yet (direction "out"). "connecting" starts when
// someone answers (this device, or the callee's device for an outgoing call) and lasts
// until media flows; "reconnecting" is a broken media path being restored (ICE restart,
// or a signaling socket that dropped). "ended" keeps the reason on screen for a moment;
// `reset` returns to idle. Every transition is in TABLE below: an event that does not
// apply to the current phase leaves the state untouched (`transition` says so), which
// is how late or duplicate server events (a stop_ringing after an answer) are ignored.

export const PHASES = ["idle", "ringing", "connecting", "in_call", "reconnecting", "ended"];

// Why a call ended, worded for the person using the app.
export const END_REASONS = {
  hangup: "Call ended",
  left: "Call ended",
  declined: "Declined",
  no_answer: "No answer",
  cancelled: "Call cancelled",
  handoff: "Moved to another device",
  answered_elsewhere: "Answered on another device",
  declined_elsewhere: "Declined on another device",
  answered_in_tab: "Answered in another tab",
  declined_in_tab: "Declined in another tab",
  timeout: "Missed call",
  ended: "Call ended",
  failed: "Call failed",
  local_hangup: "Call ended",
  local_decline: "Declined",
  local_cancel: "Call cancelled",
};

export const IDLE = Object.freeze({ phase: "idle" });

// phase → event type → (state, event, now) => next state
const TABLE = {
  idle: {
    incoming: (s, e, now) => ({
      phase: "ringing",
      direction: "in",
      callId: e.callId,
      peer: e.peer,
      media: e.media,
      group: Boolean(e.group),
      since: now,
    }),
    invite: (s, e, now) => ({
      phase: "ringing",
      direction: "out",
      callId: e.callId ?? null,
      peer: e.peer,
      media: e.media,
      group: Boolean(e.group),
      since: now,
    }),
    // This device took over a call another device of the user was in (handoff).
    take_over: (s, e, now) => ({
      phase: "connecting",
      direction: e.direction,
      callId: e.callId,
      peer: e.peer,
      media: e.media,
      group: Boolean(e.group),
      since: now,
    }),
  },
  ringing: {
    // The server gave the outgoing call its id.
    placed: (s, e) => (s.direction === "out" && s.callId == null ? { ...s, callId: e.callId } : null),
    answer: (s, e, now) => (s.direction === "in" ? { ...s, phase: "connecting", media: e.media ?? s.media, since: now } : null),
    answered: (s, e, now) => (s.direction === "out" ? { ...s, phase: "connecting", since: now } : null),
    // A group call: the first person joined; the caller joins the room.
    room: (s, e, now) => ({ ...s, group: true, phase: "connecting", since: now }),
    stop_ringing: (s, e, now) => ended(s, e.reason, now),
    ended: (s, e, now) => ended(s, e.reason, now),
  },
  connecting: {
    connected: (s, e, now) => ({ ...s, phase: "in_call", connectedAt: s.connectedAt ?? now, since: now }),
    media_lost: (s, e, now) => ({ ...s, phase: "reconnecting", since: now }),
    room: (s) => ({ ...s, group: true }),
    ended: (s, e, now) => ended(s, e.reason, now),
  },
  in_call: {
    media_lost: (s, e, now) => ({ ...s, phase: "reconnecting", since: now }),
    room: (s) => ({ ...s, group: true }),
    connected: () => null,
    ended: (s, e, now) => ended(s, e.reason, now),
  },
  reconnecting: {
    connected: (s, e, now) => ({ ...s, phase: "in_call", since: now }),
    room: (s) => ({ ...s, group: true }),
    ended: (s, e, now) => ended(s, e.reason, now),
  },
  ended: {
    reset: () => IDLE,
    incoming: (s, e, now) => TABLE.idle.incoming(IDLE, e, now),
    invite: (s, e, now) => TABLE.idle.invite(IDLE, e, now),
    take_over: (s, e, now) => TABLE.idle.take_over(IDLE, e, now),
  },
};

function ended(s, reason, now) {
  return { ...s, phase: "ended", reason: reason || "ended", endedFrom: s.phase, since: now };
}

// Events about another call than the current one never change it (except in idle/ended,
// where a new call may start).
function concernsCall(state, event) {
  if (state.phase === "idle" || state.phase === "ended") return true;
  if (event.callId == null || state.callId == null) return true;
  return event.callId === state.callId;
}

/** Apply `event` ({type, callId?, ...}) at time `now` (ms); returns {state, changed}. */
export function transition(state, event, now) {
  const handler = TABLE[state.phase]?.[event.type];
  if (!handler || !concernsCall(state, event)) return { state, changed: false };
  const next = handler(state, event, now);
  if (next == null) return { state, changed: false };
  return { state: next, changed: true };
}

/** The events each phase accepts (for documentation and tests). */
export function accepts(phase) {
  return Object.keys(TABLE[phase] ?? {});
}

/** The line under the other person's name in the call view. */
export function describe(state) {
  switch (state.phase) {
    case "ringing":
      return state.direction === "in" ? (state.media === "audio" ? "Audio call" : "Video call") : "Ringing…";
    case "connecting":
      return "Connecting…";
    case "in_call":
      return "Connected";
    case "reconnecting":
      return "Reconnecting…";
    case "ended":
      return END_REASONS[state.reason] ?? "Call ended";
    default:
      return "";
  }
}

/** Whether the call view (rather than home) should be on screen. */
export function inCallView(state) {
  return state.phase !== "idle" && !inRingView(state);
}

/** Whether the full-screen ring view should be on screen (also briefly after it stopped). */
export function inRingView(state) {
  if (state.direction !== "in") return false;
  return state.phase === "ringing" || (state.phase === "ended" && state.endedFrom === "ringing");
}
