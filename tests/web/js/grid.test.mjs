import { test } from "node:test";
import assert from "node:assert/strict";
import { DominantHold, fitCells, layoutGrid, MAX_VISIBLE } from "../../../src/visavis/web/js/core/grid.js";

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
