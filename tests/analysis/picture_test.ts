import { assert } from "../assert.ts";
import {
  enlargePicture,
  READABLE_PANEL_SIZE,
  readableScale,
  sideBySide,
} from "../../lib/analysis/picture.ts";
import type { RawImage } from "../../lib/data/source.ts";
import { pixel, shrinkBlocks } from "./blocks.ts";

/** A picture whose pixel (x, y) is [x, y, 7·x + 3·y mod 256]. */
function gradient(width: number, height: number): RawImage {
  const data = new Uint8Array(3 * width * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) data.set([x, y, (7 * x + 3 * y) % 256], 3 * (y * width + x));
  }
  return { data, width, height };
}

Deno.test("readableScale: the smallest whole factor reaching the panel size on the shorter side", () => {
  assert.equal(READABLE_PANEL_SIZE, 224);
  assert.equal(readableScale(32, 32), 7); // 7·32 = 224 exactly
  assert.equal(readableScale(28, 28), 8); // 8·28 = 224
  assert.equal(readableScale(30, 30), 8); // 7·30 = 210 is short, 8·30 = 240
  assert.equal(readableScale(64, 16), 14); // the shorter side decides
  assert.equal(readableScale(16, 64), 14);
  assert.equal(readableScale(224, 224), 1);
  assert.equal(readableScale(480, 300), 1);
  assert.equal(readableScale(32, 32, 100), 4);
  assert.equal(readableScale(32, 32, 1), 1);
  assert.equal(readableScale(32, 32, 0), 1);
  assert.throws(() => readableScale(32, 32, -1), /non-negative whole number of pixels, got -1/);
  assert.throws(() => readableScale(32, 32, 2.5), /got 2\.5/);
});

Deno.test("enlargePicture: each source pixel becomes one factor×factor block of its colour", () => {
  const source = gradient(5, 3);
  const big = enlargePicture(source, 4);
  assert.deepEqual([big.width, big.height, big.data.length], [20, 12, 20 * 12 * 3]);
  for (let y = 0; y < 12; y++) {
    for (let x = 0; x < 20; x++) {
      assert.deepEqual(pixel(big, x, y), pixel(source, Math.floor(x / 4), Math.floor(y / 4)));
    }
  }
  assert.deepEqual(shrinkBlocks(big, 4), source);
  assert.equal(enlargePicture(source, 1), source, "factor 1 is the picture itself");
  assert.throws(() => enlargePicture(source, 0), /positive whole number, got 0/);
  assert.throws(() => enlargePicture(source, 1.5), /got 1\.5/);
});

Deno.test("shrinkBlocks: a picture that is not made of uniform blocks fails", () => {
  const big = enlargePicture(gradient(2, 2), 3);
  big.data[3 * (4 * 6 + 5)] ^= 1; // one pixel inside block (1, 1)
  assert.throws(() => shrinkBlocks(big, 3), /pixel \(5, 4\) differs from its 3×3 block/);
  assert.throws(() => shrinkBlocks(gradient(5, 4), 2), /width 5 is not a multiple of 2/);
});

Deno.test("sideBySide places enlarged panels edge to edge", () => {
  const [a, b] = [enlargePicture(gradient(2, 2), 3), enlargePicture(gradient(3, 1), 2)];
  const both = sideBySide([a, b], 1, [9, 9, 9]);
  assert.deepEqual([both.width, both.height], [6 + 1 + 6, 6]);
  assert.deepEqual(pixel(both, 5, 5), [1, 1, 10]);
  assert.deepEqual(pixel(both, 6, 0), [9, 9, 9]);
  assert.deepEqual(pixel(both, 12, 1), [2, 0, 14]);
  assert.deepEqual(pixel(both, 12, 2), [9, 9, 9], "below the shorter panel");
});
