/**
 * Host-side preparation of the training step's per-batch inputs: masks and their flat patch
 * slots, and the drop-path scales. Randomness comes from seeded generators passed in, so a run is
 * reproducible and resumable.
 *
 * @module
 */

import type { TensorData } from "../graph/graph.ts";
import type { Rng } from "../runtime/rng.ts";
import { dropPathRates } from "../models/vit.ts";
import { backboneBlocks } from "../models/backbone.ts";
import { type IbotStepConfig, STEP_INPUTS } from "./step.ts";

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

/** Which rows of a data-parallel step's batch one rank holds (see {@link fillDropPath}). */
export interface RowShard {
  /** This rank. */
  readonly rank: number;
  /** Number of ranks N. */
  readonly worldSize: number;
  /** Crops per image: the rows are crop-major, `crops` blocks of the rank's B images. */
  readonly crops: number;
}

/**
 * Draws per-sample drop-path scales into `target` [depth, 2, rows]: for block i with rate p > 0,
 * floor(1 − p + U[0,1)) / (1 − p) per row and branch (attention, MLP); 1 where p = 0.
 *
 * With `shard`, the draws are those of the whole data-parallel step (N·B images per crop, in the
 * order of one process's batch of N·B, where rank r's image b stands at b·N + r, as the sharded
 * loader deals them) and this rank keeps its own rows: N ranks of B images draw what one process of
 * N·B images draws.
 */
export function fillDropPath(
  target: Float32Array,
  rates: readonly number[],
  rows: number,
  rng: Rng,
  shard: RowShard = { rank: 0, worldSize: 1, crops: 1 },
): void {
  const { rank, worldSize, crops } = shard;
  const batch = rows / crops;
  const wide = batch * worldSize;
  rates.forEach((rate, block) => {
    const keep = 1 - rate;
    for (let branch = 0; branch < 2; branch++) {
      for (let g = 0; g < crops * wide; g++) {
        const value = rate > 0 ? Math.floor(keep + rng.uniform()) / keep : 1;
        const slot = g % wide;
        if (slot % worldSize !== rank) continue;
        const row = Math.floor(g / wide) * batch + Math.floor(slot / worldSize);
        target[(block * 2 + branch) * rows + row] = value;
      }
    }
  });
}

/**
 * Draws the step's drop-path scales at `config.dropPath` into `feeds`: the global crops'
 * [depth, 2, G·B] and, with local crops, the local crops' [depth, 2, L·B], from `rng` in that order;
 * nothing when the rate is 0 (the step has no such inputs then). With `shard`, the rank's rows of
 * the whole data-parallel step's draws (see {@link fillDropPath}).
 */
export function fillStepDropPath(
  feeds: Record<string, TensorData>,
  config: IbotStepConfig,
  rng: Rng,
  shard: Omit<RowShard, "crops"> = { rank: 0, worldSize: 1 },
): void {
  if (config.dropPath <= 0) return;
  const rates = dropPathRates(config.dropPath, backboneBlocks(config.backbone));
  const { batch, globalCrops, localCrops } = config;
  fillDropPath(
    feeds[STEP_INPUTS.dropPathGlobal] as Float32Array,
    rates,
    globalCrops * batch,
    rng,
    { ...shard, crops: globalCrops },
  );
  if (localCrops > 0) {
    fillDropPath(
      feeds[STEP_INPUTS.dropPathLocal] as Float32Array,
      rates,
      localCrops * batch,
      rng,
      { ...shard, crops: localCrops },
    );
  }
}
