/**
 * Host-side preparation of the training step's per-batch inputs: masks and their patch slots,
 * and the drop-path scales. Randomness comes from seeded generators passed in, so a run is
 * reproducible and resumable.
 *
 * @module
 */

import type { TensorData } from "../graph/graph.ts";
import type { Rng } from "../runtime/rng.ts";
import { STEP_INPUTS } from "./step.ts";

/**
 * Writes the mask inputs of the step from one mask per global-crop row (crop-major, each N cells,
 * 1 = masked): `masks` [rows, N] as 0/1 floats; `slot_indices` [rows·M], the flat index of each
 * slot's token in the [rows, 1 + N] token array (CLS first); `slot_weights` [rows, M], 1 for a
 * masked patch and 0 for padding (padding points at the row's first patch). Throws when a row has
 * more masked patches than `slots`.
 */
export function fillMaskInputs(
  feeds: Record<string, TensorData>,
  masks: readonly Uint8Array[],
  slots: number,
  patches: number,
): void {
  const maskInput = feeds[STEP_INPUTS.masks] as Float32Array;
  const indices = feeds[STEP_INPUTS.slotIndices] as BigInt64Array;
  const weights = feeds[STEP_INPUTS.slotWeights] as Float32Array;
  masks.forEach((mask, row) => {
    let used = 0;
    for (let cell = 0; cell < patches; cell++) {
      maskInput[row * patches + cell] = mask[cell];
      if (!mask[cell]) continue;
      if (used === slots) {
        throw new Error(`a mask has more than the ${slots} masked patches the step was built for`);
      }
      indices[row * slots + used] = BigInt(row * (1 + patches) + 1 + cell);
      weights[row * slots + used] = 1;
      used++;
    }
    for (; used < slots; used++) {
      indices[row * slots + used] = BigInt(row * (1 + patches) + 1);
      weights[row * slots + used] = 0;
    }
  });
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
