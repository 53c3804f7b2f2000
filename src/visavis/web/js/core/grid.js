// Group call grid: how many columns, which tiles are on screen, which tile is large.
// Pure (numbers in, layout out) so it is unit-tested. Tiles keep their join order, so a
// new dominant speaker grows in place rather than reshuffling the grid (no flicker); one
// who is off screen takes the last visible place. The SFU's dominant speaker already has
// hysteresis; `holdMs` adds a floor between changes on the client side too.

export const MAX_VISIBLE = { phone: 6, desktop: 16 };
export const DOMINANT_HOLD_MS = 1500;
// A tile is at least this big, and the call's header and controls take about CHROME px
// of the height: a small window shows fewer tiles (the rest are off screen, and the SFU
// is told so it stops sending them).
export const MIN_TILE = { width: 150, height: 110 };
export const CHROME = 190;

/** How many cells (tiles, and the "+N" one) fit in `viewport`. */
export function fitCells(viewport) {
  const columns = Math.floor(viewport.width / MIN_TILE.width);
  const rows = Math.floor((viewport.height - CHROME) / MIN_TILE.height);
  return Math.max(2, columns * rows);
}

/**
 * @param {string[]} ids          tiles (remote participants, in join order)
 * @param {string|null} dominant  the SFU's dominant speaker
 * @param {{width:number, height:number}} viewport
 * @param {string|null} [pinned]  a tile that is always on screen and large (a shared
 *                                screen, FaceTime/Meet-style), even beside one other
 * @returns {{visible: string[], offscreen: string[], columns: number, rows: number, large: string|null}}
 */
export function layoutGrid(ids, dominant, viewport, pinned = null) {
  const phone = viewport.width < 700;
  const cap = phone ? MAX_VISIBLE.phone : MAX_VISIBLE.desktop;
  const cells = fitCells(viewport);
  // With some off screen, one cell is the "+N" tile.
  const max = ids.length <= Math.min(cap, cells) ? ids.length : Math.max(1, Math.min(cap, cells - 1));
  if (pinned && !ids.includes(pinned)) pinned = null;
  let visible = ids.slice(0, max);
  if (pinned && !visible.includes(pinned)) visible = [pinned, ...visible.slice(0, max - 1)];
  if (dominant && ids.includes(dominant) && !visible.includes(dominant) && max > (pinned ? 1 : 0)) {
    const last = visible.findLastIndex((id) => id !== pinned);
    visible = [...visible.slice(0, last), ...visible.slice(last + 1), dominant];
  }
  const offscreen = ids.filter((id) => !visible.includes(id));
  const large = pinned && visible.length >= 2 ? pinned : visible.length >= 3 && dominant && visible.includes(dominant) ? dominant : null;
  const used = visible.length + (large ? 3 : 0) + (offscreen.length ? 1 : 0);
  const landscape = viewport.width >= viewport.height;
  let columns = Math.max(1, Math.ceil(Math.sqrt(used)));
  if (!landscape) columns = Math.max(1, Math.min(columns, phone ? 2 : 3));
  if (large) columns = Math.max(columns, 2);
  const rows = Math.max(1, Math.ceil(used / columns));
  return { visible, offscreen, columns, rows, large };
}

/** Hold the large tile for at least `holdMs` after each change (time passed in). */
export class DominantHold {
  constructor(holdMs = DOMINANT_HOLD_MS) {
    this.holdMs = holdMs;
    this.current = null;
    this.since = -Infinity;
  }

  update(proposed, now) {
    if (proposed === this.current) return this.current;
    if (this.current !== null && now - this.since < this.holdMs) return this.current;
    this.current = proposed;
    this.since = now;
    return this.current;
  }
}

// A tile that fits inside the lowest simulcast layer of a 1080p camera (¼: 480×270, in
// device pixels) is shown without upscaling by that layer (object-fit: cover scales the
// picture by the larger of the two ratios): more pixels would be decoded and thrown
// away. Such tiles are the SFU's `thumbnails`.
export const THUMBNAIL_MAX = { width: 480, height: 270 };

/**
 * The `layout` for the SFU from the tiles on screen: participants with a tile too big
 * for the lowest layer (or the large one) are `visible` (high layers), the others
 * `thumbnails`. A participant's camera and screen come together, so one full tile of
 * theirs makes them visible.
 * @param {{id: string, width: number|null, height: number|null, large: boolean}[]} tiles
 *        participant ids and CSS pixel sizes (null: not measured yet, counted full)
 * @param {number} dpr  device pixels per CSS pixel (window.devicePixelRatio)
 * @returns {{visible: string[], thumbnails: string[]}}
 */
export function layersFor(tiles, dpr = 1) {
  const shown = new Set();
  const full = new Set();
  for (const t of tiles) {
    shown.add(t.id);
    const small = t.width != null && t.height != null && t.width * dpr <= THUMBNAIL_MAX.width && t.height * dpr <= THUMBNAIL_MAX.height;
    if (t.large || !small) full.add(t.id);
  }
  return { visible: [...full], thumbnails: [...shown].filter((id) => !full.has(id)) };
}
