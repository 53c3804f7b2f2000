// Full-tile reaction animations drawn on a canvas laid over a participant's tile.
//
//   playReaction(tileElement, "fireworks");   // resolves when the animation has finished
//
// While one plays, the tile carries data-reaction="<kind>" (for styling and for tests), the
// overlay is aria-hidden and ignores the pointer; the caller announces the reaction in
// words (an aria-live region) if it wants to. With prefers-reduced-motion the animation is a
// short, still badge instead of moving particles. Everything is drawn (no emoji font or
// image needed), so it looks the same on every system.

export const DURATION_MS = 2600;
const REDUCED_MS = 1500;

const rand = (a, b) => a + Math.random() * (b - a);
const TAU = Math.PI * 2;
const COLORS = ["#ff3b30", "#ff9500", "#ffcc00", "#34c759", "#5ac8fa", "#007aff", "#af52de"];

function heart(ctx, x, y, size, color) {
  ctx.save();
  ctx.translate(x, y);
  ctx.scale(size / 32, size / 32);
  ctx.beginPath();
  ctx.moveTo(0, 10);
  ctx.bezierCurveTo(-16, -2, -16, -16, -8, -16);
  ctx.bezierCurveTo(-3, -16, 0, -12, 0, -9);
  ctx.bezierCurveTo(0, -12, 3, -16, 8, -16);
  ctx.bezierCurveTo(16, -16, 16, -2, 0, 10);
  ctx.fillStyle = color;
  ctx.fill();
  ctx.restore();
}

function roundRect(ctx, x, y, w, h, r) {
  ctx.beginPath();
  ctx.roundRect(x, y, w, h, r);
}

function thumb(ctx, x, y, size, up) {
  ctx.save();
  ctx.translate(x, y);
  ctx.scale(size / 100, (up ? 1 : -1) * (size / 100));
  ctx.fillStyle = "#ffcc4d";
  ctx.strokeStyle = "#c68a12";
  ctx.lineWidth = 4;
  roundRect(ctx, -30, -5, 60, 50, 12); // fist
  ctx.fill();
  ctx.stroke();
  roundRect(ctx, -22, -45, 22, 48, 11); // thumb
  ctx.fill();
  ctx.stroke();
  ctx.fillStyle = "#5a9bd5";
  roundRect(ctx, -48, -5, 18, 52, 4); // cuff
  ctx.fill();
  ctx.restore();
}

/** Particle systems: make(w, h) → state; draw(ctx, state, t in 0..1, w, h). */
const SCENES = {
  hearts: {
    make: (w, h) =>
      Array.from({ length: 18 }, () => ({
        x: rand(0.1, 0.9) * w,
        delay: rand(0, 0.35),
        size: rand(0.08, 0.16) * Math.min(w, h),
        wobble: rand(0, TAU),
        color: Math.random() < 0.7 ? "#ff2d55" : "#ff6b9a",
        h,
      })),
    draw(ctx, hearts, t) {
      for (const p of hearts) {
        const k = Math.max(0, (t - p.delay) / (1 - p.delay));
        if (k <= 0) continue;
        ctx.globalAlpha = Math.min(1, (1 - k) * 2);
        const y = p.h * (1.1 - 1.2 * k);
        heart(ctx, p.x + Math.sin(p.wobble + k * 8) * 12, y, p.size * (0.6 + 0.4 * k), p.color);
      }
    },
  },
  thumbs_up: {
    make: () => ({}),
    draw(ctx, _s, t, w, h) {
      const grow = Math.min(1, t / 0.2);
      const bounce = 1 + 0.08 * Math.sin(Math.min(1, t / 0.5) * Math.PI * 3) * (1 - t);
      ctx.globalAlpha = t > 0.8 ? (1 - t) / 0.2 : 1;
      thumb(ctx, w / 2, h / 2, Math.min(w, h) * 0.55 * grow * bounce, true);
    },
  },
  thumbs_down: {
    make: () => ({}),
    draw(ctx, _s, t, w, h) {
      const grow = Math.min(1, t / 0.2);
      ctx.globalAlpha = t > 0.8 ? (1 - t) / 0.2 : 1;
      thumb(ctx, w / 2, h / 2 + Math.sin(t * 20) * 4 * (1 - t), Math.min(w, h) * 0.55 * grow, false);
    },
  },
  balloons: {
    make: (w, h) =>
      Array.from({ length: 10 }, (_, i) => ({
        x: ((i + 0.5) / 10) * w + rand(-20, 20),
        delay: rand(0, 0.3),
        r: rand(0.06, 0.1) * Math.min(w, h),
        color: COLORS[i % COLORS.length],
        sway: rand(0, TAU),
        h,
      })),
    draw(ctx, balloons, t) {
      for (const b of balloons) {
        const k = Math.max(0, (t - b.delay) / (1 - b.delay));
        if (k <= 0) continue;
        const x = b.x + Math.sin(b.sway + k * 5) * 15;
        const y = b.h + b.r * 2 - k * (b.h + b.r * 5);
        ctx.globalAlpha = 1;
        ctx.strokeStyle = "rgba(255,255,255,0.8)";
        ctx.lineWidth = 1.5;
        ctx.beginPath();
        ctx.moveTo(x, y + b.r * 1.2);
        ctx.quadraticCurveTo(x + 10, y + b.r * 2, x, y + b.r * 3);
        ctx.stroke();
        ctx.fillStyle = b.color;
        ctx.beginPath();
        ctx.ellipse(x, y, b.r * 0.85, b.r * 1.1, 0, 0, TAU);
        ctx.fill();
        ctx.fillStyle = "rgba(255,255,255,0.45)";
        ctx.beginPath();
        ctx.ellipse(x - b.r * 0.3, y - b.r * 0.4, b.r * 0.15, b.r * 0.25, -0.5, 0, TAU);
        ctx.fill();
      }
    },
  },
  confetti: {
    make: (w, h) =>
      Array.from({ length: 120 }, () => ({
        x: rand(0, w),
        y: rand(-h, 0),
        vy: rand(0.6, 1.2) * h,
        vx: rand(-40, 40),
        spin: rand(-10, 10),
        size: rand(5, 10),
        color: COLORS[Math.floor(rand(0, COLORS.length))],
      })),
    draw(ctx, pieces, t) {
      ctx.globalAlpha = t > 0.85 ? (1 - t) / 0.15 : 1;
      for (const p of pieces) {
        ctx.save();
        ctx.translate(p.x + p.vx * t * 2.6, p.y + p.vy * t * 2);
        ctx.rotate(p.spin * t);
        ctx.fillStyle = p.color;
        ctx.fillRect(-p.size / 2, -p.size / 4, p.size, p.size / 2);
        ctx.restore();
      }
    },
  },
  fireworks: {
    make: (w, h) =>
      Array.from({ length: 4 }, (_, i) => ({
        x: rand(0.2, 0.8) * w,
        y: rand(0.2, 0.5) * h,
        at: i * 0.18,
        color: COLORS[Math.floor(rand(0, COLORS.length))],
        sparks: Array.from({ length: 40 }, () => ({ a: rand(0, TAU), v: rand(0.5, 1) })),
        reach: Math.min(w, h) * 0.3,
      })),
    draw(ctx, bursts, t) {
      ctx.fillStyle = `rgba(0,0,20,${0.35 * Math.sin(Math.PI * t)})`;
      ctx.fillRect(0, 0, ctx.canvas.width, ctx.canvas.height);
      for (const b of bursts) {
        const k = (t - b.at) / 0.45;
        if (k <= 0 || k >= 1) continue;
        ctx.globalAlpha = 1 - k;
        ctx.fillStyle = b.color;
        for (const s of b.sparks) {
          const d = b.reach * s.v * Math.sqrt(k);
          ctx.beginPath();
          ctx.arc(b.x + Math.cos(s.a) * d, b.y + Math.sin(s.a) * d + 40 * k * k, 2.5, 0, TAU);
          ctx.fill();
        }
        ctx.globalAlpha = 1;
      }
    },
  },
  rain: {
    make: (w, h) =>
      Array.from({ length: 90 }, () => ({
        x: rand(0, w),
        y: rand(-h, h),
        len: rand(10, 22),
        v: rand(1.2, 2) * h,
        h,
      })),
    draw(ctx, drops, t, w, h) {
      const fade = t < 0.1 ? t / 0.1 : t > 0.85 ? (1 - t) / 0.15 : 1;
      ctx.globalAlpha = fade;
      ctx.fillStyle = "rgba(40,50,70,0.35)";
      ctx.fillRect(0, 0, w, h);
      ctx.fillStyle = "#b0b8c4";
      for (const [cx, r] of [[0.35, 0.09], [0.5, 0.12], [0.65, 0.09]]) {
        ctx.beginPath();
        ctx.arc(cx * w, 0.14 * h, r * Math.min(w, h) * 1.3, 0, TAU);
        ctx.fill();
      }
      ctx.strokeStyle = "rgba(140,190,255,0.85)";
      ctx.lineWidth = 2;
      ctx.beginPath();
      for (const d of drops) {
        const y = ((d.y + d.v * t * 2) % (h * 1.2)) + 0.15 * h;
        ctx.moveTo(d.x, y);
        ctx.lineTo(d.x - 3, y + d.len);
      }
      ctx.stroke();
    },
  },
  lasers: {
    make: () =>
      Array.from({ length: 6 }, (_, i) => ({
        fromLeft: i % 2 === 0,
        color: ["#ff2d55", "#34c759", "#5ac8fa", "#af52de", "#ffcc00", "#ff9500"][i],
        phase: rand(0, TAU),
        speed: rand(3, 6),
      })),
    draw(ctx, beams, t, w, h) {
      const fade = t < 0.1 ? t / 0.1 : t > 0.85 ? (1 - t) / 0.15 : 1;
      ctx.globalAlpha = fade;
      ctx.fillStyle = "rgba(0,0,0,0.45)";
      ctx.fillRect(0, 0, w, h);
      // A glow without shadowBlur (slow in software rendering): a wide faint beam under a
      // thin bright one.
      for (const b of beams) {
        const x0 = b.fromLeft ? 0 : w;
        const angle = Math.sin(b.phase + t * b.speed) * 0.6 + (b.fromLeft ? -0.9 : -2.2);
        const x1 = x0 + Math.cos(angle) * w * 2;
        const y1 = h + Math.sin(angle) * w * 2;
        ctx.strokeStyle = b.color;
        for (const [width, alpha] of [[12, 0.25], [3, 1]]) {
          ctx.lineWidth = width;
          ctx.globalAlpha = fade * alpha;
          ctx.beginPath();
          ctx.moveTo(x0, h);
          ctx.lineTo(x1, y1);
          ctx.stroke();
        }
      }
    },
  },
};

export const ANIMATED_KINDS = Object.keys(SCENES);
let overlays = 0;

function reducedMotion() {
  return globalThis.matchMedia?.("(prefers-reduced-motion: reduce)").matches ?? false;
}

/**
 * Play `kind` over `tile`: an element that holds the participant's picture (made position:
 * relative if it is static), or a <video> itself, whose overlay then goes into its parent
 * at the video's box. Several reactions on one tile stack; each removes its own overlay
 * when done. Resolves when done.
 */
export function playReaction(tile, kind, { duration = null } = {}) {
  const scene = SCENES[kind];
  if (!scene) return Promise.reject(new Error(`unknown reaction: ${kind}`));
  const still = reducedMotion();
  const total = duration ?? (still ? REDUCED_MS : DURATION_MS);
  const media = tile.tagName === "VIDEO" || tile.tagName === "CANVAS" || tile.tagName === "IMG";
  const host = media ? tile.parentElement : tile;
  if (getComputedStyle(host).position === "static") host.style.position = "relative";
  const canvas = document.createElement("canvas");
  canvas.className = "reaction-overlay";
  canvas.dataset.reaction = kind;
  const overlayId = (tile.dataset.reactionOverlay ??= String(++overlays));
  canvas.dataset.for = overlayId;
  canvas.setAttribute("aria-hidden", "true");
  Object.assign(canvas.style, {
    position: "absolute",
    inset: "0",
    width: "100%",
    height: "100%",
    pointerEvents: "none",
    zIndex: "5",
  });
  if (media) {
    Object.assign(canvas.style, {
      inset: "auto",
      left: `${tile.offsetLeft}px`,
      top: `${tile.offsetTop}px`,
      width: `${tile.offsetWidth}px`,
      height: `${tile.offsetHeight}px`,
    });
  }
  const rect = tile.getBoundingClientRect();
  const scale = Math.min(globalThis.devicePixelRatio || 1, 2);
  canvas.width = Math.max(1, Math.round(rect.width * scale));
  canvas.height = Math.max(1, Math.round(rect.height * scale));
  host.append(canvas);
  tile.dataset.reaction = kind;
  const ctx = canvas.getContext("2d");
  ctx.scale(scale, scale);
  const w = rect.width;
  const h = rect.height;
  const state = scene.make(w, h);
  const start = performance.now();
  return new Promise((resolve) => {
    const frame = (now) => {
      const t = Math.min(1, (now - start) / total);
      ctx.clearRect(0, 0, w, h);
      ctx.save();
      scene.draw(ctx, state, still ? 0.5 : t, w, h);
      ctx.restore();
      if (t < 1 && canvas.isConnected) {
        requestAnimationFrame(frame);
        return;
      }
      canvas.remove();
      if (!host.querySelector(`.reaction-overlay[data-for="${overlayId}"]`)) {
        delete tile.dataset.reaction;
      }
      resolve();
    };
    requestAnimationFrame(frame);
  });
}

/** Draw one frame of `kind` at progress `t` into a 2D context (benchmarks, previews). */
export function drawReactionFrame(ctx, kind, t, w, h, state = SCENES[kind].make(w, h)) {
  SCENES[kind].draw(ctx, state, t, w, h);
  return state;
}
