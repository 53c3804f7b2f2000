// Harness for effects/reactions.js + reaction-animations.js: two pages joined by a real
// peer connection (the test relays the SDP), reactions over the negotiated data channel,
// sealed with a key derived from a call secret the test hands both pages.
import {
  createReactionCipher,
  createReactions,
  createSenderKeyCipher,
  reactionChannel,
  reactionShortcut,
} from "/effects/reactions.js";
import { playReaction } from "/effects/reaction-animations.js";
import { until } from "./common.js";

let pc = null;
let channel = null;
let reactions = null;
const wire = []; // every payload this page put on the channel, hex
const played = []; // [participantId, kind] in order
let now = 0; // the rate limiters' clock: it only moves by advance(), so load cannot refill

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function tile(id) {
  let element = document.querySelector(`[data-participant-id="${id}"]`);
  if (!element) {
    element = document.createElement("div");
    element.className = "tile";
    element.dataset.participantId = id;
    element.textContent = id;
    document.getElementById("grid").append(element);
  }
  return element;
}

/** Set up this side: `selfId`, `peerId`, the call secret (hex) or null for no cipher. */
window.setup = async (selfId, peerId, secretHex) => {
  tile(selfId);
  tile(peerId);
  pc = new RTCPeerConnection();
  channel = reactionChannel(pc);
  const cipher = secretHex
    ? await createReactionCipher(Uint8Array.from(secretHex.match(/../g), (h) => parseInt(h, 16)),
        { callId: "call-1" })
    : null;
  reactions = createReactions({
    selfId,
    clock: () => now,
    cipher,
    send: (bytes) => {
      wire.push(hex(bytes));
      channel.send(bytes);
    },
    onReaction: (id, kind) => {
      played.push([id, kind]);
      playReaction(tile(id), kind);
    },
  });
  channel.onmessage = ({ data }) => reactions.receive(data, peerId);
  addEventListener("keydown", (event) => {
    const kind = reactionShortcut(event);
    if (kind) {
      event.preventDefault();
      reactions.react(kind);
    }
  });
};

window.offer = async () => {
  await pc.setLocalDescription();
  await until(() => pc.iceGatheringState === "complete", 10000, "ICE gathering");
  return pc.localDescription.toJSON();
};
window.answer = async (offer) => {
  await pc.setRemoteDescription(offer);
  await pc.setLocalDescription();
  await until(() => pc.iceGatheringState === "complete", 10000, "ICE gathering");
  return pc.localDescription.toJSON();
};
window.accept = (answer) => pc.setRemoteDescription(answer);
window.channelOpen = () => waitFor(() => channel.readyState === "open", 15000);
window.react = (kind) => reactions.react(kind);
/** Move the rate limiters' clock forward by `ms` (instead of waiting). */
window.advance = (ms) => {
  now += ms;
};
window.stats = () => JSON.parse(JSON.stringify(reactions.stats));
window.wire = () => wire;
window.played = () => played;
/** Which reaction is playing on `id`'s tile, and how many of its overlay's pixels are drawn. */
window.tileReaction = (id) => {
  const element = tile(id);
  const canvas = element.querySelector("canvas.reaction-overlay");
  let painted = 0;
  if (canvas) {
    const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
    for (let i = 3; i < data.length; i += 4) if (data[i]) painted += 1;
  }
  return { kind: element.dataset.reaction ?? null, painted };
};
/** Hand raw bytes (hex) to the receiver as if `fromId` had sent them. */
window.inject = (bytesHex, fromId) =>
  reactions.receive(Uint8Array.from(bytesHex.match(/../g) ?? [], (h) => parseInt(h, 16)), fromId);

/** Per-sender keys (group calls with SFrame sender keys): what opens and what is refused. */
window.senderKeyCheck = async () => {
  const random = () => crypto.getRandomValues(new Uint8Array(32));
  const keys = { alice: { secret: random(), keyId: 1 }, bob: { secret: random(), keyId: 4 } };
  const view = () => createSenderKeyCipher({ keyFor: (id) => keys[id] ?? null, callId: "c" });
  const atAlice = view();
  const atBob = view();
  const plain = new TextEncoder().encode('{"v":1,"kind":"rain","id":"0123456789abcdef"}');
  const sealed = await atAlice.seal(plain, "alice");
  const outcome = async (fn) => {
    try {
      return new TextDecoder().decode(await fn());
    } catch (error) {
      return `refused: ${error.reason}`;
    }
  };
  const result = {
    opened: await outcome(() => atBob.open(sealed, "alice")),
    asBob: await outcome(() => atBob.open(sealed, "bob")),
    unknown: await outcome(() => atBob.open(sealed, "carol")),
  };
  keys.alice = { secret: random(), keyId: 2 }; // alice rekeyed (someone left)
  result.afterRekey = await outcome(() => atBob.open(sealed, "alice"));
  result.newKey = await outcome(async () => atBob.open(await atAlice.seal(plain, "alice"), "alice"));
  return result;
};
