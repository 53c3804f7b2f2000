import { test } from "node:test";
import assert from "node:assert/strict";
import { codecPreferences, isRoomCodec, withScalability } from "../../../src/visavis/web/js/call/codecs.js";

// What Chromium's RTCRtpSender.getCapabilities("video") lists (abridged).
const caps = {
  codecs: [
    { mimeType: "video/VP8", clockRate: 90000 },
    { mimeType: "video/rtx", clockRate: 90000 },
    { mimeType: "video/VP9", clockRate: 90000, sdpFmtpLine: "profile-id=0" },
    { mimeType: "video/VP9", clockRate: 90000, sdpFmtpLine: "profile-id=2" },
    { mimeType: "video/H264", clockRate: 90000, sdpFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f" },
    { mimeType: "video/H264", clockRate: 90000, sdpFmtpLine: "level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f" },
    { mimeType: "video/H264", clockRate: 90000, sdpFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f" },
    { mimeType: "video/AV1", clockRate: 90000, sdpFmtpLine: "level-idx=5;profile=0;tier=0" },
    { mimeType: "video/red", clockRate: 90000 },
  ],
};

test("the room's codec first and alone, in the variant the SFU accepts, then RTX", () => {
  const pick = (name) => codecPreferences(caps, name).map((c) => `${c.mimeType} ${c.sdpFmtpLine ?? ""}`.trim());
  assert.deepEqual(pick("vp8"), ["video/VP8", "video/rtx"]);
  assert.deepEqual(pick("vp9"), ["video/VP9 profile-id=0", "video/rtx"]);
  assert.deepEqual(pick("h264"), ["video/H264 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f", "video/rtx"]);
  assert.deepEqual(pick("av1"), ["video/AV1 level-idx=5;profile=0;tier=0", "video/rtx"]);
});

test("a browser without the room's codec gets null (the call then fails with a message)", () => {
  const noH264 = { codecs: caps.codecs.filter((c) => c.mimeType !== "video/H264") };
  assert.equal(codecPreferences(noH264, "h264"), null);
  assert.equal(codecPreferences(null, "vp8"), null);
  assert.equal(isRoomCodec({ mimeType: "video/VP9" }, "vp9"), true); // no profile-id: profile 0
});

test("VP9 and AV1 simulcast encodings name a scalability mode; VP8 and H.264 are left alone", () => {
  const encodings = [{ rid: "q", scaleResolutionDownBy: 4 }, { rid: "f" }];
  assert.deepEqual(withScalability(encodings, "vp9").map((e) => e.scalabilityMode), ["L1T3", "L1T3"]);
  assert.deepEqual(withScalability(encodings, "av1")[0], { rid: "q", scaleResolutionDownBy: 4, scalabilityMode: "L1T3" });
  assert.equal(withScalability(encodings, "vp8"), encodings);
  assert.equal(withScalability(encodings, "h264"), encodings);
});
