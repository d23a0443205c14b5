/**
 * Batches for fine-tuning, prepared by a pool of Web Workers (`finetune_worker.ts`) while the
 * main thread trains: training batches through the fine-tuning train transform
 * (`finetune_transform.ts`: RandomResizedCrop, flip, RandAugment, normalise, random erasing) and
 * evaluation batches through the official evaluation transform. Mixup and CutMix are the
 * caller's, per batch (`mixup.ts`), so a trainer can also run without them.
 *
 * Results do not depend on the number of workers: an epoch visits the images in the order of
 * `epochOrder(n, seed, epoch)` (as `loader.ts`), a data-parallel rank its shard of it
 * (`shard.ts`), and image i's augmentation comes from `finetuneStream(seed, epoch, i)`.
 *
 * ```ts
 * import { finetuneBatches } from "./finetune_loader.ts";
 * const source = { kind: "idx" as const,
 *   images: "data/fashion-mnist/train-images-idx3-ubyte.gz",
 *   labels: "data/fashion-mnist/train-labels-idx1-ubyte.gz" };
 * for await (const batch of finetuneBatches(source, {
 *   size: 32, batchSize: 64, seed: 0, epoch: 0, transform: { resizeImages: true },
 * })) console.log(batch.labels[0]);
 * ```
 *
 * @module
 */

import {
  checkFinetuneTransform,
  defaultFinetuneTransform,
  type FinetuneTransformConfig,
} from "./finetune_transform.ts";
import type { FinetuneResults, FinetuneTask } from "./finetune_worker.ts";
import {
  DEFAULT_STALL_SECONDS,
  defaultWorkerCount,
  epochOrder,
  type EvalBatch,
  partRange,
  requireNonNegativeInteger,
  requirePositiveInteger,
  requirePositiveSeconds,
  type SourcePart,
} from "./loader.ts";
import { requireRank, shardIndices, shardSize } from "./shard.ts";
import { describeSource, type SourceSpec } from "./source.ts";
import { inOrder, withDeadline, WorkerPool } from "./worker_pool.ts";

/** Options of {@link finetuneBatches}. */
export interface FinetuneBatchOptions {
  /** Input side S in pixels. */
  size: number;
  /** Images per batch on this rank, B. */
  batchSize: number;
  /** Seeds the epoch orders and every image's augmentation. */
  seed: number;
  /** The epoch, a non-negative integer. */
  epoch: number;
  /** The first batch to deliver (to resume an interrupted epoch); default 0. */
  start?: number;
  /** Worker count; default max(1, logical cores − 1). */
  workers?: number;
  /** This process's rank in a data-parallel job; default 0. */
  rank?: number;
  /** Number of ranks sharing each epoch; default 1. */
  worldSize?: number;
  /** Changes to the official train transform ({@link defaultFinetuneTransform} of `size`). */
  transform?: Partial<FinetuneTransformConfig>;
  /** Seconds to wait for the opening or an awaited batch; default {@link DEFAULT_STALL_SECONDS}. */
  stallSeconds?: number;
}

/** One training batch of B images. */
export interface FinetuneBatch {
  /** [B, 3, S, S] float32, normalised (and randomly erased where drawn). */
  images: Float32Array;
  /** [B] class indices. */
  labels: Int32Array;
  /** [B] dataset indices. */
  indices: Int32Array;
}

/**
 * Training batches per epoch on each rank: ⌊⌈length / worldSize⌉ / batchSize⌋ (the official
 * loader drops the last partial batch).
 */
export function finetuneItersPerEpoch(length: number, batchSize: number, worldSize = 1): number {
  return Math.floor(shardSize(length, worldSize) / batchSize);
}

/**
 * This rank's training batches of one epoch, in order, from batch `start` on: each image through
 * the fine-tuning train transform, in `workers` workers that stop when the iteration ends. Throws
 * if the shard holds fewer images than one batch; a worker's failure (an image that cannot be
 * decoded, say) or a batch awaited for `stallSeconds` ends the iteration with an error.
 */
export async function* finetuneBatches(
  source: SourceSpec,
  options: FinetuneBatchOptions,
): AsyncGenerator<FinetuneBatch> {
  const { size, batchSize, seed, epoch } = options;
  const start = options.start ?? 0;
  const workers = options.workers ?? defaultWorkerCount();
  const stallSeconds = options.stallSeconds ?? DEFAULT_STALL_SECONDS;
  const rank = options.rank ?? 0;
  const worldSize = options.worldSize ?? 1;
  requirePositiveInteger("size", size);
  requirePositiveInteger("batchSize", batchSize);
  requirePositiveInteger("workers", workers);
  requireNonNegativeInteger("epoch", epoch);
  requireNonNegativeInteger("start", start);
  requirePositiveSeconds(stallSeconds);
  requireRank(rank, worldSize);
  if (!Number.isSafeInteger(seed)) throw new Error(`seed must be a safe integer, got ${seed}`);
  const config = { ...defaultFinetuneTransform(size), ...options.transform };
  checkFinetuneTransform(config);
  const pool = finetunePool(workers);
  try {
    const what = describeSource(source);
    const info = await openInfo(pool, source, stallSeconds);
    const iters = finetuneItersPerEpoch(info.length, batchSize, worldSize);
    if (iters === 0) {
      throw new Error(
        `${what} has ${info.length} images, ${shardSize(info.length, worldSize)} for this rank, ` +
          `fewer than one batch of ${batchSize}`,
      );
    }
    const order = shardIndices(epochOrder(info.length, seed, epoch), rank, worldSize);
    const label = (k: number) => `batch ${start + k + 1} of ${iters}`;
    const request = (k: number) =>
      pool.run({
        type: "train",
        source,
        size,
        config,
        seed,
        epoch,
        indices: order.slice((start + k) * batchSize, (start + k + 1) * batchSize),
      }, label(k));
    const epochOf = `epoch ${epoch} of ${what}`;
    yield* inOrder(Math.max(0, iters - start), 2 * workers, request, {
      seconds: stallSeconds,
      stalled: (k, inFlight) => pool.stallError(label(k), epochOf, stallSeconds, inFlight),
    });
  } finally {
    pool.close();
  }
}

/** Options of {@link finetuneEvalBatches}. */
export interface FinetuneEvalOptions {
  /** Input side S in pixels. */
  size: number;
  /** Rows per batch; the last batch is zero-padded (see {@link EvalBatch.count}). */
  batchSize: number;
  /** Worker count; default max(1, logical cores − 1). */
  workers?: number;
  /** The official `resize_im` (default `size > 32`): resize and centre-crop, or take as is. */
  resizeImages?: boolean;
  /** The official `crop_pct`: the resize is to int(size / cropPct); default 224/256 below 384 px. */
  cropPct?: number;
  /** Seconds to wait for the opening or an awaited batch; default {@link DEFAULT_STALL_SECONDS}. */
  stallSeconds?: number;
  /** Only this part of the source (one data-parallel rank's share); default the whole. */
  part?: SourcePart;
}

/**
 * Evaluation batches of a source in dataset order through the official fine-tuning evaluation
 * transform (Resize(int(size / cropPct)) bilinear, CenterCrop(size), normalise; see
 * `finetuneEvalTransform`), in `workers` workers that stop when the iteration ends. Shaped as
 * `evalBatches` of `loader.ts` (whose transform differs: bicubic, round(size·256/224)).
 */
export async function* finetuneEvalBatches(
  source: SourceSpec,
  options: FinetuneEvalOptions,
): AsyncGenerator<EvalBatch> {
  const { size, batchSize } = options;
  const workers = options.workers ?? defaultWorkerCount();
  const stallSeconds = options.stallSeconds ?? DEFAULT_STALL_SECONDS;
  const resizeImages = options.resizeImages ?? size > 32;
  const cropPct = options.cropPct ?? (size < 384 ? 224 / 256 : 1);
  const part = options.part ?? { rank: 0, parts: 1 };
  requirePositiveInteger("size", size);
  requirePositiveInteger("batchSize", batchSize);
  requirePositiveInteger("workers", workers);
  requirePositiveSeconds(stallSeconds);
  requireRank(part.rank, part.parts);
  if (!(cropPct > 0 && cropPct <= 1)) throw new Error(`cropPct must be in (0, 1], got ${cropPct}`);
  const pool = finetunePool(workers);
  try {
    const what = describeSource(source);
    const info = await openInfo(pool, source, stallSeconds);
    const { first, count: length } = partRange(info.length, part);
    const batches = Math.ceil(length / batchSize);
    const label = (k: number) => `evaluation batch ${k + 1} of ${batches}`;
    const request = (k: number): Promise<EvalBatch> => {
      const count = Math.min(batchSize, length - k * batchSize);
      const indices = Int32Array.from({ length: count }, (_, i) => first + k * batchSize + i);
      const task = { type: "eval" as const, source, size, resizeImages, cropPct, rows: batchSize };
      return pool.run({ ...task, indices }, label(k)).then((result) => ({
        ...result,
        count,
        total: length,
      }));
    };
    yield* inOrder(batches, 2 * workers, request, {
      seconds: stallSeconds,
      stalled: (k, inFlight) => pool.stallError(label(k), what, stallSeconds, inFlight),
    });
  } finally {
    pool.close();
  }
}

/** The pool of `finetune_worker.ts` workers. */
type FinetunePool = WorkerPool<FinetuneTask, FinetuneResults>;

/** A pool of `count` `finetune_worker.ts` workers. */
function finetunePool(count: number): FinetunePool {
  return new WorkerPool(new URL("./finetune_worker.ts", import.meta.url), count);
}

/**
 * The size and classes of `source`, opened by a worker of `pool`; an opening that takes
 * `stallSeconds` throws an error naming the source and the workers' state.
 */
function openInfo(
  pool: FinetunePool,
  source: SourceSpec,
  stallSeconds: number,
): Promise<FinetuneResults["info"]> {
  const label = "the opening";
  return withDeadline(
    pool.run({ type: "info", source }, label),
    stallSeconds,
    () => pool.stallError(label, describeSource(source), stallSeconds, 1),
  );
}
