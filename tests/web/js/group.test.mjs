import { test, mock } from "node:test";
import assert from "node:assert/strict";

globalThis.WebSocket ??= { OPEN: 1 };
// (call/codecs.js asks the browser what it can send and receive)
const capabilities = { getCapabilities: () => ({ codecs: [{ mimeType: "video/VP8", clockRate: 90000 }] }) };
globalThis.RTCRtpSender ??= capabilities;
globalThis.RTCRtpReceiver ??= capabilities;
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

/** A peer connection that only counts transceivers and hands out offers. */
function fakePc() {
  const transceivers = [];
  return {
    transceivers,
    getTransceivers: () => transceivers,
    addTransceiver(kind, init) {
      transceivers.push({ direction: init.direction, receiver: { track: { kind } }, setCodecPreferences() {} });
    },
    async createOffer() {
      return { sdp: `m-lines ${transceivers.length}` };
    },
    async setLocalDescription() {},
    async setRemoteDescription() {},
  };
}

const recv = (pc, kind) => pc.transceivers.filter((t) => t.direction === "recvonly" && t.receiver.track.kind === kind).length;
const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

test("a burst of renegotiate requests adds each missing slot once", async () => {
  const { call, sent } = joined();
  const pc = fakePc();
  call.pc = pc;
  call.generation = 1;
  call.videoCodec = "vp8";
  call._negotiate(1, 1); // joined: one other participant
  await tick();
  assert.equal(sent.at(-1).type, "offer");
  // While that offer is out, three more join: the SFU counts each request from the last
  // offer it answered (none yet), so they say 2, 3 and 4 more of each kind.
  call._message({ type: "renegotiate", audio: 2, video: 2 });
  call._message({ type: "renegotiate", audio: 3, video: 3 });
  call._message({ type: "renegotiate", audio: 4, video: 4 });
  call.answerWaiter({ sdp: "answer", streams: [] });
  await tick();
  await tick();
  const offers = sent.filter((m) => m.type === "offer");
  assert.equal(offers.length, 2); // one offer served the three requests
  assert.equal(recv(pc, "audio"), 4);
  assert.equal(recv(pc, "video"), 4);
  // Answered with 4 of each: a request for one more now means five.
  call.answerWaiter({ sdp: "answer", streams: [] });
  await tick();
  call._message({ type: "renegotiate", audio: 1, video: 0 });
  await tick();
  assert.equal(recv(pc, "audio"), 5);
  assert.equal(recv(pc, "video"), 4);
});
