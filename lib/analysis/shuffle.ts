/**
 * Shuffle robustness of a linear-probed ViT (official `analysis/eval_shuffle.sh`, the `--shuffle`
 * mode of `analysis/occlusion/eval.py`): the image is cut into a rows×cols grid of pieces, the
 * pieces are put back in a random order (one permutation per batch, shared by its images, as the
 * official code draws it), and the top-1 on the test split is measured for each grid. The official
 * grids are (2, 2), (2, 4), (4, 4), (4, 8), (8, 8), (14, 14), (16, 16) for 224-pixel images; the
 * grid must divide the image side. The pieces move in pixel space, so a grid finer or coarser than
 * the patch grid works as well; on the patch grid it equals moving the patch tokens.
 *
 * @module
 */

import type { EvalBatch } from "../data/loader.ts";
import { Rng } from "../runtime/rng.ts";
import { correctCount, type LinearProbeModel } from "./linear_probe_model.ts";

/** The grids of the official `eval_shuffle.sh`: (`shuffle_h`, `shuffle_w`) pairs. */
export const OFFICIAL_SHUFFLE_GRIDS: readonly (readonly [number, number])[] = [
  [2, 2],
  [2, 4],
  [4, 4],
  [4, 8],
  [8, 8],
  [14, 14],
  [16, 16],
];

/** A uniformly random permutation of 0 … n − 1 (Fisher–Yates). */
export function randomPermutation(rng: Rng, n: number): Int32Array {
  const order = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  return order;
}

/**
 * The `batch` images [batch, channels, size, size] with their pieces rearranged: the image is cut
 * into a rows×cols grid of (size/rows)×(size/cols) pieces, numbered row-major, and piece `i` of
 * the result is piece `order[i]` of the input (the official `img[:, order, :]`).
 */
export function shufflePieces(
  images: Float32Array,
  batch: number,
  channels: number,
  size: number,
  grid: readonly [number, number],
  order: ArrayLike<number>,
): Float32Array {
  const [rows, cols] = grid;
  if (size % rows !== 0 || size % cols !== 0) {
    throw new Error(`a ${rows}×${cols} shuffle grid does not divide a ${size}-pixel image`);
  }
  if (order.length !== rows * cols) {
    throw new Error(`a ${rows}×${cols} grid has ${rows * cols} pieces, the order ${order.length}`);
  }
  const h = size / rows;
  const w = size / cols;
  const out = new Float32Array(images.length);
  for (let plane = 0; plane < batch * channels; plane++) {
    const base = plane * size * size;
    for (let i = 0; i < order.length; i++) {
      const fromTop = Math.floor(order[i] / cols) * h;
      const fromLeft = (order[i] % cols) * w;
      const toTop = Math.floor(i / cols) * h;
      const toLeft = (i % cols) * w;
      for (let y = 0; y < h; y++) {
        const from = base + (fromTop + y) * size + fromLeft;
        out.set(images.subarray(from, from + w), base + (toTop + y) * size + toLeft);
      }
    }
  }
  return out;
}

/** One point of the shuffle curve. */
export interface ShufflePoint {
  /** Rows and columns of the grid. */
  readonly grid: readonly [number, number];
  /** Number of pieces (rows·cols), the official key. */
  readonly pieces: number;
  /** Top-1 on the test split, in percent, averaged over the runs. */
  readonly top1: number;
}

/** Options of {@link shuffleCurve}. */
export interface ShuffleOptions {
  /** Independent random runs (`exp_count`, default 1). */
  readonly runs?: number;
  /** Seed of the permutations (default 1, as the official `np.random.seed(1)`). */
  readonly seed?: number;
  /** Called after each batch with the images done and the total. */
  readonly onBatch?: (done: number, total: number) => void;
}

/** Top-1 of `model` on `batches` with the pieces of each grid shuffled; one pass over the data. */
export async function shuffleCurve(
  model: LinearProbeModel,
  batches: AsyncIterable<EvalBatch>,
  grids: readonly (readonly [number, number])[],
  options: ShuffleOptions = {},
): Promise<ShufflePoint[]> {
  const { size } = model;
  for (const [rows, cols] of grids) {
    if (!(rows >= 1 && cols >= 1) || size % rows !== 0 || size % cols !== 0) {
      throw new Error(
        `a ${rows}×${cols} shuffle grid does not divide the ${size}-pixel images; choose ` +
          `--shuffle_h and --shuffle_w among the divisors of ${size}`,
      );
    }
  }
  const runs = options.runs ?? 1;
  const rngs = Array.from(
    { length: runs },
    (_, r) => grids.map(([h, w]) => new Rng(options.seed ?? 1).fork(`run:${r}:grid:${h}x${w}`)),
  );
  const correct = grids.map(() => 0);
  let seen = 0;
  for await (const b of batches) {
    for (let r = 0; r < runs; r++) {
      for (let i = 0; i < grids.length; i++) {
        const order = randomPermutation(rngs[r][i], grids[i][0] * grids[i][1]);
        const shuffled = shufflePieces(b.images, model.batch, 3, size, grids[i], order);
        const logits = await model.logits(shuffled);
        correct[i] += correctCount(logits, b.labels, b.count, model.classes);
      }
    }
    seen += b.count;
    options.onBatch?.(seen, b.total);
  }
  return grids.map((grid, i) => ({
    grid,
    pieces: grid[0] * grid[1],
    top1: 100 * correct[i] / (seen * runs),
  }));
}
