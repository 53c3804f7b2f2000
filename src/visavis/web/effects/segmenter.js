// Person segmentation: MediaPipe's selfie segmentation model and its wasm runtime, served
// by visavis itself from vendor/ (no CDN). The package is a classic script that defines a
// global, so it is loaded with a <script> tag from this origin (allowed by the CSP's
// script-src 'self'; the wasm needs 'wasm-unsafe-eval', which signaling's CSP grants).

const VENDOR = new URL("../vendor/@mediapipe/selfie_segmentation/", import.meta.url);

let scriptLoading = null;

function loadScript() {
  if (globalThis.SelfieSegmentation) return Promise.resolve();
  scriptLoading ??= new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = new URL("selfie_segmentation.js", VENDOR).href;
    script.onload = () => resolve();
    script.onerror = () => {
      scriptLoading = null;
      reject(new Error(`segmentation runtime not found at ${script.src} (run scripts/setup)`));
    };
    document.head.append(script);
  });
  return scriptLoading;
}

/**
 * Load the model (once per call) and return `{segment(image, draw), close()}`.
 *
 * `segment` runs the model on `image` (a canvas) and calls `draw(mask)` while the mask is
 * valid: MediaPipe hands out a GPU-backed image that is only usable inside its callback.
 * The mask's alpha channel is the person's confidence. `landscape` picks the 144×256
 * model (cheaper, made for landscape webcams) over the 256×256 one.
 */
export async function createSegmenter({ landscape = true, cpu = true } = {}) {
  await loadScript();
  const solution = new globalThis.SelfieSegmentation({
    locateFile: (file) => new URL(file, VENDOR).href,
  });
  solution.setOptions({
    modelSelection: landscape ? 1 : 0,
    selfieMode: false,
    useCpuInference: cpu,
  });
  let waiting = null;
  solution.onResults((results) => {
    const callback = waiting;
    waiting = null;
    callback?.(results.segmentationMask);
  });
  await solution.initialize();
  return {
    async segment(image, draw) {
      let drawn = false;
      waiting = (mask) => {
        draw(mask);
        drawn = true;
      };
      await solution.send({ image });
      waiting = null;
      return drawn;
    },
    close: () => solution.close(),
  };
}
