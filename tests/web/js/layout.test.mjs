import { test, mock } from "node:test";
import assert from "node:assert/strict";

globalThis.WebSocket ??= { OPEN: 1 };
const { GroupCall, LAYOUT_SETTLE_MS } = await import("../../../src/visavis/web/js/call/group.js");

function joined() {
  const call = new GroupCall({ callId: "c", room: {}, media: null, onUpdate() {}, onChange() {} });
  const sent = [];
  call.ws = { readyState: WebSocket.OPEN, send: (text) => sent.push(JSON.parse(text)) };
  call.participantId = "me";
  return { call, sent };
}

test("the first layout goes at once, a change once the grid held still", () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    const { call, sent } = joined();
    call.setLayout(["a", "b"], []);
    assert.deepEqual(sent, [{ type: "layout", visible: ["a", "b"], thumbnails: [] }]);
    // every render asks again: nothing new is sent
    call.setLayout(["b", "a"], []);
    assert.equal(sent.length, 1);
    // a resize in progress: three sizes within the settle time, only the last one goes
    call.setLayout(["a"], ["b"]);
    mock.timers.tick(LAYOUT_SETTLE_MS - 50);
    call.setLayout(["b"], ["a"]);
    mock.timers.tick(LAYOUT_SETTLE_MS - 50);
    call.setLayout(["a"], ["b"]);
    mock.timers.tick(LAYOUT_SETTLE_MS - 1);
    assert.equal(sent.length, 1);
    // renders asking for the same pending layout do not hold it back
    call.setLayout(["a"], ["b"]);
    mock.timers.tick(1);
    assert.deepEqual(sent.at(-1), { type: "layout", visible: ["a"], thumbnails: ["b"] });
    assert.equal(sent.length, 2);
    // a change that goes back before it settles sends nothing (no flicker)
    call.setLayout(["a", "b"], []);
    call.setLayout(["a"], ["b"]);
    mock.timers.tick(LAYOUT_SETTLE_MS * 2);
    assert.equal(sent.length, 2);
  } finally {
    mock.timers.reset();
  }
});

test("a layout asked before the SFU said joined goes when the grid asks again", () => {
  const { call, sent } = joined();
  call.participantId = null;
  call.setLayout(["a"], ["b"]);
  assert.equal(sent.length, 0);
  call.participantId = "me";
  call.setLayout(["a"], ["b"]);
  assert.deepEqual(sent, [{ type: "layout", visible: ["a"], thumbnails: ["b"] }]);
});
