// Unit tests of the call state machine (node --test): every path a call takes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { IDLE, PHASES, accepts, describe, inCallView, inRingView, transition } from "../../../src/visavis/web/js/core/callstate.js";

function run(events, start = IDLE) {
  let state = start;
  let now = 1000;
  for (const event of events) {
    state = transition(state, event, (now += 100)).state;
  }
  return state;
}

test("every phase is in the table", () => {
  for (const phase of PHASES) assert.ok(Array.isArray(accepts(phase)));
  assert.deepEqual(accepts("idle").sort(), ["incoming", "invite", "take_over"]);
});

test("incoming call answered: idle → ringing → connecting → in_call → ended → idle", () => {
  const phases = [];
  let state = IDLE;
  const events = [
    { type: "incoming", callId: "c1", peer: { handle: "a@x.io", display_name: "A" }, media: "video" },
    { type: "answer", callId: "c1", media: "audio" },
    { type: "connected", callId: "c1" },
    { type: "ended", callId: "c1", reason: "hangup" },
    { type: "reset" },
  ];
  for (const [i, event] of events.entries()) {
    const out = transition(state, event, i * 10);
    assert.ok(out.changed, `${event.type} in ${state.phase}`);
    state = out.state;
    phases.push(state.phase);
  }
  assert.deepEqual(phases, ["ringing", "connecting", "in_call", "ended", "idle"]);
});

test("answer audio-only changes the media of the call", () => {
  const s = run([{ type: "incoming", callId: "c", peer: {}, media: "video" }, { type: "answer", callId: "c", media: "audio" }]);
  assert.equal(s.media, "audio");
  assert.equal(s.phase, "connecting");
});

test("outgoing: invite, placed (call id), answered, connected", () => {
  let s = run([{ type: "invite", peer: { handle: "b@x.io" }, media: "video" }]);
  assert.equal(s.phase, "ringing");
  assert.equal(s.direction, "out");
  assert.equal(s.callId, null);
  assert.equal(describe(s), "Ringing…");
  s = run([{ type: "placed", callId: "c9" }, { type: "answered", callId: "c9" }, { type: "connected", callId: "c9" }], s);
  assert.equal(s.callId, "c9");
  assert.equal(s.phase, "in_call");
  assert.ok(s.connectedAt);
});

test("a caller cannot 'answer' its own call; a callee ignores 'answered'", () => {
  const out = run([{ type: "invite", peer: {}, media: "video" }, { type: "placed", callId: "c" }]);
  assert.equal(transition(out, { type: "answer", callId: "c" }, 0).changed, false);
  const inc = run([{ type: "incoming", callId: "c", peer: {}, media: "video" }]);
  assert.equal(transition(inc, { type: "answered", callId: "c" }, 0).changed, false);
});

test("answered on another device stops the ring, shown in the ring view", () => {
  const s = run([
    { type: "incoming", callId: "c", peer: {}, media: "video" },
    { type: "stop_ringing", callId: "c", reason: "answered_elsewhere" },
  ]);
  assert.equal(s.phase, "ended");
  assert.equal(s.endedFrom, "ringing");
  assert.equal(describe(s), "Answered on another device");
  assert.ok(inRingView(s));
  assert.ok(!inCallView(s));
});

test("cancel, decline and timeout end a ringing call with their reason", () => {
  for (const [reason, text] of [["cancelled", "Call cancelled"], ["declined", "Declined"], ["timeout", "Missed call"], ["no_answer", "No answer"]]) {
    const s = run([{ type: "incoming", callId: "c", peer: {}, media: "video" }, { type: "stop_ringing", callId: "c", reason }]);
    assert.equal(s.phase, "ended");
    assert.equal(describe(s), text);
  }
});

test("reconnecting: media lost and restored, or given up", () => {
  const live = run([
    { type: "invite", peer: {}, media: "video" },
    { type: "placed", callId: "c" },
    { type: "answered", callId: "c" },
    { type: "connected", callId: "c" },
  ]);
  const lost = transition(live, { type: "media_lost", callId: "c" }, 5000).state;
  assert.equal(lost.phase, "reconnecting");
  assert.equal(describe(lost), "Reconnecting…");
  assert.ok(inCallView(lost));
  const back = transition(lost, { type: "connected", callId: "c" }, 6000).state;
  assert.equal(back.phase, "in_call");
  assert.equal(back.connectedAt, live.connectedAt, "the call keeps its start time");
  const gone = transition(lost, { type: "ended", callId: "c", reason: "failed" }, 6000).state;
  assert.equal(gone.phase, "ended");
  assert.equal(describe(gone), "Call failed");
});

test("events about another call leave the current one alone", () => {
  const s = run([{ type: "incoming", callId: "c1", peer: {}, media: "video" }, { type: "answer", callId: "c1" }]);
  for (const type of ["ended", "connected", "media_lost", "room"]) {
    assert.equal(transition(s, { type, callId: "other" }, 0).changed, false, type);
  }
});

test("late and duplicate events are ignored", () => {
  const s = run([{ type: "incoming", callId: "c", peer: {}, media: "video" }, { type: "answer", callId: "c" }]);
  assert.equal(transition(s, { type: "stop_ringing", callId: "c", reason: "answered_elsewhere" }, 0).changed, false);
  assert.equal(transition(s, { type: "incoming", callId: "d", peer: {}, media: "video" }, 0).changed, false);
  assert.equal(transition(IDLE, { type: "ended", callId: "c", reason: "hangup" }, 0).changed, false);
  assert.equal(transition(IDLE, { type: "connected" }, 0).changed, false);
});

test("a group call: the room arrives while ringing out or mid-call", () => {
  const ringing = run([{ type: "invite", peer: {}, media: "video", group: true }, { type: "placed", callId: "g" }]);
  const joined = transition(ringing, { type: "room", callId: "g" }, 0).state;
  assert.equal(joined.phase, "connecting");
  assert.ok(joined.group);
  const live = run([{ type: "incoming", callId: "c", peer: {}, media: "video" }, { type: "answer", callId: "c" }, { type: "connected", callId: "c" }]);
  const grown = transition(live, { type: "room", callId: "c" }, 0).state;
  assert.equal(grown.phase, "in_call");
  assert.ok(grown.group);
});

test("a new call may start from the ended screen", () => {
  const ended = run([{ type: "incoming", callId: "c", peer: {}, media: "video" }, { type: "stop_ringing", callId: "c", reason: "cancelled" }]);
  const next = transition(ended, { type: "incoming", callId: "d", peer: {}, media: "audio" }, 0).state;
  assert.equal(next.phase, "ringing");
  assert.equal(next.callId, "d");
  assert.equal(next.endedFrom, undefined);
});

test("handoff: this device takes over a live call", () => {
  const s = transition(IDLE, { type: "take_over", callId: "c", peer: {}, media: "video", direction: "out" }, 0).state;
  assert.equal(s.phase, "connecting");
  assert.equal(transition(s, { type: "connected", callId: "c" }, 1).state.phase, "in_call");
});
