import { assert } from "../assert.ts";
import type { TensorData } from "../../lib/graph/graph.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { countMasked, fillDropPath, fillMaskInputs } from "../../lib/train/batch_inputs.ts";
import { STEP_INPUTS } from "../../lib/train/step.ts";

Deno.test("countMasked: the masked cells of a batch", () => {
  assert.equal(countMasked([Uint8Array.of(0, 1, 0, 1), Uint8Array.of(1, 1, 1, 0)]), 5);
  assert.equal(countMasked([new Uint8Array(9)]), 0);
  assert.equal(countMasked([]), 0);
});

Deno.test("fillMaskInputs: masks, flat slot indices with the CLS offset, weights and padding", () => {
  // Three rows of 4 patches (token rows of 5 with CLS first): 5 masked patches in 8 slots.
  const feeds: Record<string, TensorData> = {};
  const masks = [
    Uint8Array.of(0, 1, 0, 1),
    Uint8Array.of(1, 1, 1, 0),
    Uint8Array.of(0, 0, 0, 0),
  ];
  fillMaskInputs(feeds, masks, 8, 4);
  assert.deepEqual(
    Array.from(feeds[STEP_INPUTS.masks] as Float32Array),
    [0, 1, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0],
  );
  // Row r, cell c is token r·5 + 1 + c; padding points at token 1, row 0's first patch.
  assert.deepEqual(
    Array.from(feeds[STEP_INPUTS.slotIndices] as BigInt64Array, Number),
    [2, 4, 6, 7, 8, 1, 1, 1],
  );
  // 1 / (masked count of the row · 3 rows): row 0 has 2, row 1 has 3; padding weighs 0.
  const sixth = Math.fround(1 / 6);
  const ninth = Math.fround(1 / 9);
  assert.deepEqual(
    Array.from(feeds[STEP_INPUTS.slotWeights] as Float32Array),
    [sixth, sixth, ninth, ninth, ninth, 0, 0, 0],
  );
});

Deno.test("fillMaskInputs: exactly as many slots as masked patches leaves no padding", () => {
  const feeds: Record<string, TensorData> = {};
  fillMaskInputs(feeds, [Uint8Array.of(0, 0, 1), Uint8Array.of(1, 0, 0)], 2, 3);
  assert.deepEqual(Array.from(feeds[STEP_INPUTS.slotIndices] as BigInt64Array, Number), [3, 5]);
  assert.deepEqual(Array.from(feeds[STEP_INPUTS.slotWeights] as Float32Array), [0.5, 0.5]);
});

Deno.test("fillMaskInputs: no masked patch gives all-padding slots of weight 0", () => {
  const feeds: Record<string, TensorData> = {};
  fillMaskInputs(feeds, [new Uint8Array(4), new Uint8Array(4)], 3, 4);
  assert.deepEqual(Array.from(feeds[STEP_INPUTS.slotIndices] as BigInt64Array, Number), [1, 1, 1]);
  assert.deepEqual(Array.from(feeds[STEP_INPUTS.slotWeights] as Float32Array), [0, 0, 0]);
});

Deno.test("fillMaskInputs: the masked tokens are exactly the weighted slots; each row weighs 1 / rows", () => {
  const rows = 4;
  const patches = 16;
  const slots = 40;
  const rng = new Rng(3);
  const masks = Array.from({ length: rows }, () => {
    const mask = new Uint8Array(patches);
    for (let k = 0; k < 6; k++) mask[rng.int(patches)] = 1;
    return mask;
  });
  const feeds: Record<string, TensorData> = {};
  fillMaskInputs(feeds, masks, slots, patches);
  const indices = Array.from(feeds[STEP_INPUTS.slotIndices] as BigInt64Array, Number);
  const weights = feeds[STEP_INPUTS.slotWeights] as Float32Array;
  assert.equal(indices.length, slots);
  assert.equal(weights.length, slots);
  const weighted = indices.filter((_, k) => weights[k] > 0);
  const expected: number[] = [];
  masks.forEach((mask, row) => {
    mask.forEach((bit, cell) => {
      if (bit) expected.push(row * (1 + patches) + 1 + cell);
    });
  });
  assert.deepEqual(weighted, expected);
  // Every slot, padding included, points at a patch token, never a CLS token.
  for (const token of indices) assert(token % (1 + patches) !== 0, `token ${token}`);
  // The weights of a row's slots add up to 1 / rows: the mean over images of per-image means.
  for (let row = 0; row < rows; row++) {
    let total = 0;
    indices.forEach((token, k) => {
      if (weights[k] > 0 && Math.floor(token / (1 + patches)) === row) total += weights[k];
    });
    assert(Math.abs(total - 1 / rows) < 1e-7, `row ${row} weighs ${total}`);
  }
});

Deno.test("fillMaskInputs: a batch with more masked patches than slots throws", () => {
  const feeds: Record<string, TensorData> = {};
  assert.throws(
    () => fillMaskInputs(feeds, [Uint8Array.of(1, 0, 0, 0), Uint8Array.of(1, 1, 1, 0)], 3, 4),
    /^Error: the batch has 4 masked patches, more than the 3 slots given$/,
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

Deno.test("fillDropPath: N ranks of B images keep their rows of one process's N·B draws", () => {
  const rates = [0, 0.3, 0.6];
  const [crops, batch, ranks] = [2, 3, 2];
  const whole = new Float32Array(rates.length * 2 * crops * batch * ranks);
  fillDropPath(whole, rates, crops * batch * ranks, new Rng(5));
  for (let rank = 0; rank < ranks; rank++) {
    const part = new Float32Array(rates.length * 2 * crops * batch);
    fillDropPath(part, rates, crops * batch, new Rng(5), { rank, worldSize: ranks, crops });
    for (let plane = 0; plane < rates.length * 2; plane++) {
      for (let c = 0; c < crops; c++) {
        for (let b = 0; b < batch; b++) {
          const expected = whole[(plane * crops + c) * batch * ranks + b * ranks + rank];
          assert.equal(part[(plane * crops + c) * batch + b], expected, `${plane} ${c} ${b}`);
        }
      }
    }
  }
});
