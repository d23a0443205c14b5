/**
 * Occlusion robustness of a linear-probed ViT (official `analysis/occlusion/eval.py`, from
 * "Intriguing Properties of Vision Transformers"): top-1 on the test split as a growing share of
 * the image's patches is dropped.
 *
 * - Random (`--random_drop`): the image is cut into a grid of cells (`shuffle_size`, the patch grid
 *   by default) and `k·cells // 10` cells, k = 0 … 9, chosen at random once per batch (the same
 *   cells for every image of the batch, as the official code draws them), are dropped. The
 *   official code zeroes their normalised pixels (the mean colour); {@link RandomDropOptions.mode}
 *   `remove` instead removes their tokens from the sequence (cells must then be patches).
 * - Saliency-guided (`--dino`): a saliency network's last-block attention from the CLS token to
 *   the patches, one head (the official head 1), sorted; the patches that hold the top λ of the
 *   attention mass (λ = 0.1 … 1.0) are the foreground. Dropping the foreground (`drop_best`) or
 *   the background zeroes those patches' pixels; the x axis is then the information loss ratio,
 *   the mean share of patches dropped. The official code takes the saliency from a DINO ViT-S;
 *   here it is any ViT backbone file (by default the evaluated one).
 *
 * @module
 */

import type { EvalBatch } from "../data/loader.ts";
import { Rng } from "../runtime/rng.ts";
import { requireVit } from "../checkpoint/backbone_file.ts";
import type { BackboneRunner } from "./backbone_runner.ts";
import { correctCount, type LinearProbeModel } from "./linear_probe_model.ts";

/** The official numbers of cells to drop: k·cells // 10 for k = 0 … 9. */
export function officialDropCounts(cells: number): number[] {
  return Array.from({ length: 10 }, (_, k) => Math.floor(k * cells / 10));
}

/** `count` distinct cells of `cells`, drawn uniformly without replacement. */
export function randomCells(rng: Rng, cells: number, count: number): Int32Array {
  if (!Number.isInteger(count) || count < 0 || count > cells) {
    throw new Error(`cannot choose ${count} of ${cells} cells`);
  }
  const all = Int32Array.from({ length: cells }, (_, i) => i);
  for (let i = 0; i < count; i++) {
    const j = i + rng.int(cells - i);
    const t = all[i];
    all[i] = all[j];
    all[j] = t;
  }
  return all.slice(0, count);
}

/**
 * Zeroes, in every one of `batch` images [batch, 3, size, size], the pixels of the grid cells
 * `cells` (row-major numbers of a rows×cols grid whose cells are size/rows × size/cols pixels).
 * In place.
 */
export function zeroCells(
  images: Float32Array,
  batch: number,
  size: number,
  grid: readonly [number, number],
  cells: ArrayLike<number>,
): void {
  const [rows, cols] = grid;
  if (size % rows !== 0 || size % cols !== 0) {
    throw new Error(`a ${rows}×${cols} grid does not divide a ${size}-pixel image`);
  }
  const h = size / rows;
  const w = size / cols;
  for (let b = 0; b < batch * 3; b++) {
    const plane = b * size * size;
    for (let i = 0; i < cells.length; i++) {
      const top = Math.floor(cells[i] / cols) * h;
      const left = (cells[i] % cols) * w;
      for (let y = top; y < top + h; y++) {
        images.fill(0, plane + y * size + left, plane + y * size + left + w);
      }
    }
  }
}

/**
 * The salient patches of one attention row (CLS → patches, [N]): 1 for each patch that belongs
 * to the top `lambda` of the attention mass. As the official code: the row sorted ascending,
 * divided by its sum, cumulated; a patch is salient when the cumulative sum at its place exceeds
 * 1 − λ.
 */
export function salientPatches(attention: ArrayLike<number>, lambda: number): Uint8Array {
  const n = attention.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => attention[a] - attention[b]);
  let total = 0;
  for (let i = 0; i < n; i++) total += attention[i];
  const salient = new Uint8Array(n);
  let cumulative = 0;
  for (const i of order) {
    cumulative += attention[i] / total;
    if (cumulative > 1 - lambda) salient[i] = 1;
  }
  return salient;
}

/** One point of an occlusion curve. */
export interface OcclusionPoint {
  /** Share of the image's cells or patches dropped, in [0, 1] (the information loss ratio). */
  readonly dropped: number;
  /** Top-1 on the test split, in percent. */
  readonly top1: number;
}

/** Options of {@link randomDropCurve}. */
export interface RandomDropOptions {
  /**
   * The grid of cells (`shuffle_size`): rows and columns (default: the patch grid). Cells are
   * size/rows × size/cols pixels.
   */
  readonly grid?: readonly [number, number];
  /** Numbers of cells to drop (default {@link officialDropCounts}). */
  readonly counts?: readonly number[];
  /**
   * `zero`: the dropped cells' normalised pixels become 0 (official); `remove`: their tokens
   * leave the sequence (the grid must be the patch grid).
   */
  readonly mode?: "zero" | "remove";
  /** Independent random runs (`exp_count`, default 1); the curve is their mean. */
  readonly runs?: number;
  /** Seed of the cell draws (default 1, as the official `np.random.seed(1)`). */
  readonly seed?: number;
  /** Called after each batch with the images done and the total. */
  readonly onBatch?: (done: number, total: number) => void;
}

/**
 * Top-1 of `model` on `batches` for each number of randomly dropped cells, averaged over the
 * runs. One pass over the data: every count and run is scored on each batch.
 */
export async function randomDropCurve(
  model: LinearProbeModel,
  batches: AsyncIterable<EvalBatch>,
  options: RandomDropOptions = {},
): Promise<OcclusionPoint[]> {
  const grid = options.grid ?? [model.side, model.side];
  const cells = grid[0] * grid[1];
  const counts = options.counts ?? officialDropCounts(cells);
  const mode = options.mode ?? "zero";
  const runs = options.runs ?? 1;
  if (mode === "remove" && (grid[0] !== model.side || grid[1] !== model.side)) {
    throw new Error(
      `removing tokens needs the patch grid (${model.side}×${model.side}), not ${grid[0]}×${
        grid[1]
      }`,
    );
  }
  if (counts.some((c) => !Number.isInteger(c) || c < 0 || c >= cells)) {
    throw new Error(`the numbers of cells to drop must be in [0, ${cells}), got ${counts}`);
  }
  const rngs = Array.from(
    { length: runs },
    (_, r) => counts.map((c) => new Rng(options.seed ?? 1).fork(`run:${r}:drop:${c}`)),
  );
  const correct = counts.map(() => 0);
  let seen = 0;
  for await (const b of batches) {
    for (let r = 0; r < runs; r++) {
      for (let i = 0; i < counts.length; i++) {
        const dropped = randomCells(rngs[r][i], cells, counts[i]);
        let logits: Float32Array;
        if (mode === "remove") {
          const gone = new Set(dropped);
          const kept = Array.from({ length: cells }, (_, p) => p).filter((p) => !gone.has(p));
          logits = await model.logits(b.images, kept);
        } else {
          const images = b.images.slice();
          zeroCells(images, b.count, model.size, grid, dropped);
          logits = await model.logits(images);
        }
        correct[i] += correctCount(logits, b.labels, b.count, model.classes);
      }
    }
    seen += b.count;
    options.onBatch?.(seen, b.total);
  }
  return counts.map((c, i) => ({ dropped: c / cells, top1: 100 * correct[i] / (seen * runs) }));
}

/** Options of {@link saliencyDropCurves}. */
export interface SaliencyDropOptions {
  /** Attention head of the saliency network's last block (official 1). */
  readonly head?: number;
  /** Shares λ of the attention mass that make the foreground (default 0.1, 0.2, … 1.0). */
  readonly lambdas?: readonly number[];
  /** Called after each batch with the images done and the total. */
  readonly onBatch?: (done: number, total: number) => void;
}

/** One point of a saliency-guided curve. */
export interface SaliencyPoint extends OcclusionPoint {
  /** Share of the attention mass taken as foreground. */
  readonly lambda: number;
}

/** The saliency-guided curves: the foreground dropped (`drop_best`) and the background dropped. */
export interface SaliencyCurves {
  /** The patches holding the top λ of the attention mass are dropped. */
  readonly foreground: SaliencyPoint[];
  /** Every other patch is dropped. */
  readonly background: SaliencyPoint[];
}

/**
 * Top-1 of `model` when the salient patches of `saliency`'s attention (foreground) or the others
 * (background) are zeroed, for each λ; `dropped` is the mean share of patches zeroed. The saliency
 * network sees the clean images at the model's size; its patch grid sets the zeroed blocks.
 */
export async function saliencyDropCurves(
  model: LinearProbeModel,
  saliency: BackboneRunner,
  batches: AsyncIterable<EvalBatch>,
  options: SaliencyDropOptions = {},
): Promise<SaliencyCurves> {
  const head = options.head ?? 1;
  const heads = requireVit(
    saliency.loaded,
    "the saliency-guided occlusion",
    "the saliency is the CLS token's attention",
  ).config.heads;
  if (!Number.isInteger(head) || head < 0 || head >= heads) {
    throw new Error(`saliency head ${head} is outside the saliency network's ${heads} heads`);
  }
  const lambdas = options.lambdas ?? Array.from({ length: 10 }, (_, i) => (i + 1) / 10);
  const { size } = model;
  const sides = ["foreground", "background"] as const;
  const correct = { foreground: lambdas.map(() => 0), background: lambdas.map(() => 0) };
  const dropped = { foreground: lambdas.map(() => 0), background: lambdas.map(() => 0) };
  let seen = 0;
  for await (const b of batches) {
    const run = await saliency.run(b.images, model.batch, size, size);
    const attention = run.attention!;
    const side = run.grid[0];
    const n = side * side;
    const tokens = n + 1;
    for (let l = 0; l < lambdas.length; l++) {
      const masks = Array.from({ length: b.count }, (_, i) => {
        const row = (i * heads + head) * tokens * tokens;
        return salientPatches(attention.subarray(row + 1, row + tokens), lambdas[l]);
      });
      for (const which of sides) {
        const images = b.images.slice();
        masks.forEach((salient, i) => {
          const cells: number[] = [];
          for (let p = 0; p < n; p++) {
            if ((salient[p] === 1) === (which === "foreground")) cells.push(p);
          }
          dropped[which][l] += cells.length / n;
          zeroCells(images.subarray(i * 3 * size * size), 1, size, [side, side], cells);
        });
        const logits = await model.logits(images);
        correct[which][l] += correctCount(logits, b.labels, b.count, model.classes);
      }
    }
    seen += b.count;
    options.onBatch?.(seen, b.total);
  }
  const curve = (which: typeof sides[number]) =>
    lambdas.map((lambda, l) => ({
      lambda,
      dropped: dropped[which][l] / seen,
      top1: 100 * correct[which][l] / seen,
    }));
  return { foreground: curve("foreground"), background: curve("background") };
}
