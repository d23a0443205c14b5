/**
 * Host-side preparation of the training step's per-batch inputs: masks and their flat patch
 * slots, and the drop-path scales. Randomness comes from seeded generators passed in, so a run is
 * reproducible and resumable.
 *
 * @module
 */

import type { TensorData } from "../graph/graph.ts";
import type { Rng } from "../runtime/rng.ts";
import { STEP_INPUTS } from "./step.ts";

/** The number of masked cells (1 = masked) over a batch's masks. */
export function countMasked(masks: readonly Uint8Array[]): number {
  let total = 0;
  for (const mask of masks) for (const cell of mask) total += cell;
  return total;
}

/**
 * Sets the mask inputs of the step, as fresh arrays, from one mask per global-crop row
 * (crop-major, G·B rows of N cells, 1 = masked): `masks` [rows, N] as 0/1 floats, and for
 * `slots` patch slots (S, the batch's bucket) `slot_indices` [S], the flat index
 * row·(1 + N) + 1 + cell of each masked patch's token in the [rows, 1 + N] token array (CLS
 * first), row by row, then padding pointing at token 1 (row 0's first patch), and `slot_weights`
 * [S], each masked patch's weight in the patch term, 1 / (max(count of its row, 1) · rows) (the
 * mean over the row's masked patches, then over the rows), and 0 for padding. Throws when the
 * batch has more masked patches than `slots`.
 */
export function fillMaskInputs(
  feeds: Record<string, TensorData>,
  masks: readonly Uint8Array[],
  slots: number,
  patches: number,
): void {
  const masked = countMasked(masks);
  if (masked > slots) {
    throw new Error(`the batch has ${masked} masked patches, more than the ${slots} slots given`);
  }
  const maskInput = new Float32Array(masks.length * patches);
  const indices = new BigInt64Array(slots).fill(1n);
  const weights = new Float32Array(slots);
  let slot = 0;
  masks.forEach((mask, row) => {
    const weight = 1 / (Math.max(1, countMasked([mask])) * masks.length);
    for (let cell = 0; cell < patches; cell++) {
      maskInput[row * patches + cell] = mask[cell];
      if (!mask[cell]) continue;
      indices[slot] = BigInt(row * (1 + patches) + 1 + cell);
      weights[slot] = weight;
      slot++;
    }
  });
  feeds[STEP_INPUTS.masks] = maskInput;
  feeds[STEP_INPUTS.slotIndices] = indices;
  feeds[STEP_INPUTS.slotWeights] = weights;
}

/**
 * Draws per-sample drop-path scales into `target` [depth, 2, rows]: for block i with rate p > 0,
 * floor(1 − p + U[0,1)) / (1 − p) per row and branch (attention, MLP); 1 where p = 0.
 */
export function fillDropPath(
  target: Float32Array,
  rates: readonly number[],
  rows: number,
  rng: Rng,
): void {
  rates.forEach((rate, block) => {
    const keep = 1 - rate;
    for (let i = 0; i < 2 * rows; i++) {
      target[block * 2 * rows + i] = rate > 0 ? Math.floor(keep + rng.uniform()) / keep : 1;
    }
  });
}
