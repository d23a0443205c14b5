/**
 * Random erasing with timm's semantics: a fixed plan writes exactly its rectangle; the draws erase
 * with probability p, boxes stay inside the image with area and aspect in range, and the noise is
 * standard normal.
 */

import { assert } from "../assert.ts";
import {
  applyRandomErasing,
  drawRandomErasing,
  type RandomErasingPlan,
} from "../../lib/data/random_erasing.ts";
import { Rng } from "../../lib/runtime/rng.ts";

Deno.test("applyRandomErasing writes the noise into its rectangle only", () => {
  const [channels, height, width] = [2, 5, 6];
  const image = Float32Array.from({ length: channels * height * width }, (_, i) => 100 + i);
  const plan: RandomErasingPlan = {
    top: 1,
    left: 2,
    height: 3,
    width: 2,
    noise: Float32Array.from({ length: channels * 3 * 2 }, (_, i) => -i),
  };
  const before = image.slice();
  applyRandomErasing(image, channels, height, width, plan);
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const at = (c * height + y) * width + x;
        const inside = y >= 1 && y < 4 && x >= 2 && x < 4;
        const expected = inside ? -((c * 3 + (y - 1)) * 2 + (x - 2)) : before[at];
        assert.equal(image[at], expected, `channel ${c} row ${y} column ${x}`);
      }
    }
  }
  assert.throws(
    () => applyRandomErasing(image, channels, height, width, { ...plan, top: 3 }),
    /does not fit/,
  );
});

Deno.test("drawRandomErasing erases with probability p, boxes in range, normal noise", () => {
  const rng = new Rng(5);
  const [height, width] = [24, 20];
  const n = 4000;
  let erased = 0;
  let sum = 0;
  let squares = 0;
  let count = 0;
  for (let i = 0; i < n; i++) {
    const plan = drawRandomErasing(3, height, width, rng, { probability: 0.25 });
    if (!plan) continue;
    erased++;
    assert(plan.top >= 0 && plan.top + plan.height <= height);
    assert(plan.left >= 0 && plan.left + plan.width <= width);
    assert(plan.height < height && plan.width < width);
    const area = plan.height * plan.width / (height * width);
    // Rounding the sides moves the area by up to about one row and one column.
    assert(area > 0.02 - 2 / 20 && area < 1 / 3 + 2 / 20, `area fraction ${area}`);
    assert.equal(plan.noise.length, 3 * plan.height * plan.width);
    for (const v of plan.noise) {
      sum += v;
      squares += v * v;
      count++;
    }
  }
  // With a 24×20 image every erasing attempt sequence almost always fits: the rate is ≈ p.
  assert(Math.abs(erased / n - 0.25) < 0.03, `erased share ${erased / n}`);
  const mean = sum / count;
  assert(Math.abs(mean) < 0.02, `noise mean ${mean}`);
  assert(Math.abs(squares / count - mean * mean - 1) < 0.03, "noise variance");
  assert.equal(drawRandomErasing(3, height, width, rng, { probability: 0 }), null);
});

Deno.test("drawRandomErasing gives up after 10 attempts that do not fit", () => {
  // A 1×100 image: a box of ≥ 2 px area with aspect ≥ 0.3 has ≥ 1 row, never fewer than the
  // image has.
  const rng = new Rng(1);
  for (let i = 0; i < 20; i++) {
    assert.equal(drawRandomErasing(3, 1, 100, rng, { probability: 1 }), null);
  }
  assert.throws(() => drawRandomErasing(3, 8, 8, rng, { minArea: 0.5, maxArea: 0.2 }), /minArea/);
});
