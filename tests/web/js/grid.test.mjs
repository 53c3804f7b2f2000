import { test } from "node:test";
import assert from "node:assert/strict";
import { DominantHold, fitCells, layersFor, layoutGrid, MAX_VISIBLE, THUMBNAIL_MAX } from "../../../src/visavis/web/js/core/grid.js";

const ids = (n) => Array.from({ length: n }, (_, i) => `p${i}`);
const desktop = { width: 1440, height: 900 };
const phone = { width: 390, height: 844 };

test("every size from 2 to 31 others gets a grid that fits", () => {
  for (let n = 2; n <= 31; n++) {
    for (const viewport of [desktop, phone]) {
      const g = layoutGrid(ids(n), "p1", viewport);
      const max = viewport === phone ? MAX_VISIBLE.phone : MAX_VISIBLE.desktop;
      assert.equal(g.visible.length, Math.min(n, max));
      assert.equal(g.visible.length + g.offscreen.length, n);
      assert.ok(g.columns * g.rows >= g.visible.length + (g.large ? 3 : 0) + (g.offscreen.length ? 1 : 0));
    }
  }
});

test("the dominant speaker grows in place; tiles keep their order", () => {
  const a = layoutGrid(ids(5), "p1", desktop);
  const b = layoutGrid(ids(5), "p3", desktop);
  assert.equal(a.large, "p1");
  assert.equal(b.large, "p3");
  assert.deepEqual(a.visible, b.visible);
});

test("an off-screen dominant speaker takes the last visible place", () => {
  const g = layoutGrid(ids(20), "p19", phone);
  assert.ok(g.visible.includes("p19"));
  assert.equal(g.visible.length, MAX_VISIBLE.phone);
  assert.ok(g.offscreen.includes("p5"));
});

test("no large tile with two others", () => {
  assert.equal(layoutGrid(ids(2), "p0", desktop).large, null);
});

test("DominantHold keeps a speaker on screen for the hold time", () => {
  const hold = new DominantHold(1500);
  assert.equal(hold.update("a", 0), "a");
  assert.equal(hold.update("b", 500), "a");
  assert.equal(hold.update("b", 1600), "b");
  assert.equal(hold.update("a", 1700), "b");
});

test("a small window shows fewer tiles; the rest are off screen behind a +N tile", () => {
  const small = { width: 340, height: 330 }; // two cells
  const g = layoutGrid(ids(3), "p2", small);
  assert.deepEqual(g.visible, ["p2"]); // the dominant speaker keeps the one place
  assert.deepEqual(g.offscreen, ["p0", "p1"]);
  assert.equal(layoutGrid(ids(2), null, small).offscreen.length, 0); // two fit
  assert.ok(fitCells(desktop) > MAX_VISIBLE.desktop && fitCells(phone) > MAX_VISIBLE.phone);
});

test("a shared screen is pinned: on screen and large, even beside one other tile", () => {
  const g = layoutGrid(["s", "p0"], "p0", desktop, "s");
  assert.equal(g.large, "s");
  assert.ok(g.columns * g.rows >= g.visible.length + 3);
  const many = layoutGrid([...ids(20), "s"], "p19", phone, "s");
  assert.ok(many.visible.includes("s") && many.visible.includes("p19"));
  assert.equal(many.large, "s");
  assert.equal(many.visible.length, MAX_VISIBLE.phone);
  assert.equal(layoutGrid(["s"], null, desktop, "s").large, null); // alone: no need
  assert.equal(layoutGrid(ids(4), "p1", desktop, "gone").large, "p1"); // a stopped share
});

test("small tiles are thumbnails; the large tile and big ones get high layers", () => {
  const tile = (id, width, height, large = false) => ({ id, width, height, large });
  // a 1440×900 desktop with 16 tiles: ~280×170 px each, the dominant speaker's 2×2
  const crowd = [tile("a", 570, 350, true), ...ids(15).map((id) => tile(id, 281, 170))];
  assert.deepEqual(layersFor(crowd), { visible: ["a"], thumbnails: ids(15) });
  // the same tiles on a 2× screen need twice the pixels: all full
  assert.deepEqual(layersFor(crowd, 2).thumbnails, []);
  // exactly the lowest layer of a 1080p camera still fits; one pixel more does not
  assert.deepEqual(layersFor([tile("x", THUMBNAIL_MAX.width, THUMBNAIL_MAX.height)]).thumbnails, ["x"]);
  assert.deepEqual(layersFor([tile("x", THUMBNAIL_MAX.width + 1, 100)]).visible, ["x"]);
  // a tile not measured yet is full (never paused or blurred by a guess)
  assert.deepEqual(layersFor([tile("x", null, null)]).visible, ["x"]);
  // one full tile of a participant (their shared screen, large) makes them visible
  assert.deepEqual(layersFor([tile("s", 900, 500, true), tile("s", 200, 120)]), { visible: ["s"], thumbnails: [] });
  // a small large tile (a tiny window) is still full: it is the one people look at
  assert.deepEqual(layersFor([tile("a", 300, 200, true), tile("b", 140, 100)]), { visible: ["a"], thumbnails: ["b"] });
});
