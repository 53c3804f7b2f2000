// Helpers shared by the effects test pages (served under /__effects__/ by the tests).

/** One frame of `track` as RGBA bytes, base64 (a clone is read; the track keeps running). */
export async function grab(track) {
  const clone = track.clone();
  const reader = new MediaStreamTrackProcessor({ track: clone }).readable.getReader();
  const { value: frame } = await reader.read();
  const canvas = new OffscreenCanvas(frame.displayWidth, frame.displayHeight);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(frame, 0, 0);
  frame.close();
  reader.cancel();
  clone.stop();
  const { data, width, height } = ctx.getImageData(0, 0, canvas.width, canvas.height);
  let binary = "";
  for (let i = 0; i < data.length; i += 0x8000) {
    binary += String.fromCharCode(...data.subarray(i, i + 0x8000));
  }
  return { width, height, rgba: btoa(binary) };
}

/** Resolve when `check()` is truthy, polling every `every` ms, failing after `limit` ms. */
export async function until(check, limit, what, every = 50) {
  const deadline = performance.now() + limit;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, every));
  }
}

/** For the tests: `waitFor("expression", ms)` without eval (the CSP forbids it). */
globalThis.waitFor = (check, limit = 10000) => until(check, limit, String(check));
