import { assert } from "../assert.ts";
import type { TensorData } from "../../lib/graph/graph.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { fillDropPath, fillMaskInputs } from "../../lib/train/batch_inputs.ts";
import { STEP_INPUTS } from "../../lib/train/step.ts";

/** Mask feeds for `rows` rows of `patches` cells and `slots` slots, filled with junk first. */
function maskFeeds(rows: number, patches: number, slots: number): Record<string, TensorData> {
  return {
    [STEP_INPUTS.masks]: new Float32Array(rows * patches).fill(7),
    [STEP_INPUTS.slotIndices]: new BigInt64Array(rows * slots).fill(-9n),
    [STEP_INPUTS.slotWeights]: new Float32Array(rows * slots).fill(7),
  };
}

Deno.test("fillMaskInputs: masks, slot indices with the CLS offset, weights and padding", () => {
  // Three rows of 4 patches (token rows of 5 with CLS first), 3 slots per row.
  const feeds = maskFeeds(3, 4, 3);
  const masks = [
    Uint8Array.of(0, 1, 0, 1),
    Uint8Array.of(1, 1, 1, 0),
    Uint8Array.of(0, 0, 0, 0),
  ];
  fillMaskInputs(feeds, masks, 3, 4);
  assert.deepEqual(
    Array.from(feeds[STEP_INPUTS.masks] as Float32Array),
    [0, 1, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0],
  );
  // Row r, cell c is token r·5 + 1 + c; padding points at the row's first patch, r·5 + 1.
  assert.deepEqual(
    Array.from(feeds[STEP_INPUTS.slotIndices] as BigInt64Array, Number),
    [2, 4, 1, 6, 7, 8, 11, 11, 11],
  );
  assert.deepEqual(
    Array.from(feeds[STEP_INPUTS.slotWeights] as Float32Array),
    [1, 1, 0, 1, 1, 1, 0, 0, 0],
  );
});

Deno.test("fillMaskInputs: the masked tokens are exactly the weighted slots", () => {
  const rows = 4;
  const patches = 16;
  const slots = 6;
  const rng = new Rng(3);
  const masks = Array.from({ length: rows }, () => {
    const mask = new Uint8Array(patches);
    for (let k = 0; k < slots; k++) mask[rng.int(patches)] = 1;
    return mask;
  });
  const feeds = maskFeeds(rows, patches, slots);
  fillMaskInputs(feeds, masks, slots, patches);
  const indices = Array.from(feeds[STEP_INPUTS.slotIndices] as BigInt64Array, Number);
  const weights = feeds[STEP_INPUTS.slotWeights] as Float32Array;
  const weighted = indices.filter((_, k) => weights[k] === 1).sort((a, b) => a - b);
  const expected: number[] = [];
  masks.forEach((mask, row) => {
    mask.forEach((bit, cell) => {
      if (bit) expected.push(row * (1 + patches) + 1 + cell);
    });
  });
  assert.deepEqual(weighted, expected);
  // Every slot, padding included, points at a patch token (never a CLS token) of its own row.
  indices.forEach((token, k) => {
    const row = Math.floor(k / slots);
    assert(token > row * (1 + patches) && token <= row * (1 + patches) + patches, `slot ${k}`);
  });
});

Deno.test("fillMaskInputs: a mask with more masked patches than slots throws", () => {
  const feeds = maskFeeds(2, 4, 2);
  assert.throws(
    () => fillMaskInputs(feeds, [Uint8Array.of(1, 0, 0, 0), Uint8Array.of(1, 1, 1, 0)], 2, 4),
    /a mask has more than the 2 masked patches the step was built for/,
  );
});

Deno.test("fillDropPath: scales are 0 or 1/keep, and 1 everywhere for rate 0", () => {
  const rates = [0, 0.1, 0.5];
  const rows = 6;
  const target = new Float32Array(rates.length * 2 * rows).fill(-1);
  fillDropPath(target, rates, rows, new Rng(0));
  rates.forEach((rate, block) => {
    const values = target.subarray(block * 2 * rows, (block + 1) * 2 * rows);
    for (const value of values) {
      if (rate === 0) assert.equal(value, 1);
      else assert(value === 0 || value === Math.fround(1 / (1 - rate)), `block ${block}: ${value}`);
    }
  });
});

Deno.test("fillDropPath: each row and branch is kept with probability 1 − rate", () => {
  const rates = [0.2, 0.5, 0.75];
  const rows = 5000;
  const target = new Float32Array(rates.length * 2 * rows);
  fillDropPath(target, rates, rows, new Rng(11));
  rates.forEach((rate, block) => {
    const values = target.subarray(block * 2 * rows, (block + 1) * 2 * rows);
    const kept = values.filter((v) => v > 0).length / values.length;
    // 10 000 draws: the standard error is at most 0.005.
    assert(Math.abs(kept - (1 - rate)) < 0.025, `rate ${rate}: kept ${kept}`);
    const mean = values.reduce((a, b) => a + b, 0) / values.length;
    assert(Math.abs(mean - 1) < 0.1, `rate ${rate}: mean scale ${mean}`);
  });
});

Deno.test("fillDropPath: the same generator state gives the same draws", () => {
  const draw = (seed: number) => {
    const target = new Float32Array(2 * 2 * 32);
    fillDropPath(target, [0.3, 0.6], 32, new Rng(seed));
    return Array.from(target);
  };
  assert.deepEqual(draw(5), draw(5));
  assert.notDeepEqual(draw(5), draw(6));
});
