/**
 * Batches of augmented images, prepared by a pool of Web Workers (`loader_worker.ts`) while the
 * main thread trains: decoding and augmentation never run on the main thread, whose
 * `session.run` blocks.
 *
 * Like PyTorch's DataLoader, each worker builds whole batches and `prefetchBatches` is per
 * worker, so up to workers · prefetchBatches batches are in flight; batches are delivered in
 * order, their buffers transferred (not copied) from the workers. Results do not depend on the
 * number of workers: the epoch's order comes from `new Rng(seed).fork("epoch:<e>")` and image
 * i's augmentation from `new Rng(seed).fork("<e>:<i>")`.
 *
 * In a data-parallel job of `worldSize` ranks, each rank's loader visits its shard of the epoch's
 * order (`shard.ts`: the rule of PyTorch's `DistributedSampler`), and the augmentations, keyed by
 * image, differ between ranks because the images do. Step k of N ranks with batches of B
 * together covers the images of step k of one rank with batches of N·B (padding aside).
 *
 * Nothing waits forever: a worker that crashes, or a reply that cannot be delivered, ends the
 * iteration with that error, and opening the source or a batch the consumer awaits that takes
 * `stallSeconds` (default {@link DEFAULT_STALL_SECONDS}) ends it with an error naming the request,
 * the requests in flight and each worker's state (its request, and whether it answers a ping).
 *
 * ```ts
 * import { MultiCropLoader } from "./loader.ts";
 * const loader = await MultiCropLoader.create({
 *   source: { kind: "idx", images: "data/fashion-mnist/train-images-idx3-ubyte.gz",
 *             labels: "data/fashion-mnist/train-labels-idx1-ubyte.gz" },
 *   crops: { globalCropsNumber: 2, globalCropSize: 32, globalCropsScale: [0.14, 1],
 *            localCropsNumber: 4, localCropSize: 16, localCropsScale: [0.05, 0.4] },
 *   batchSize: 64,
 *   seed: 0,
 * });
 * for await (const batch of loader.epoch(0)) console.log(batch.indices[0]);
 * loader.close();
 * ```
 *
 * @module
 */

import { Rng } from "../runtime/rng.ts";
import { checkMultiCropConfig, type MultiCropConfig } from "./augment.ts";
import type { WorkerResults, WorkerTask } from "./loader_worker.ts";
import { requireRank, shardIndices, shardSize } from "./shard.ts";
import { describeSource, type SourceSpec } from "./source.ts";
import { inOrder, withDeadline, WorkerPool } from "./worker_pool.ts";

/** Options of a {@link MultiCropLoader}. */
export interface MultiCropLoaderOptions {
  /** Where the images come from. */
  source: SourceSpec;
  /** The multi-crop recipe. */
  crops: MultiCropConfig;
  /** Images per batch on this rank, B. */
  batchSize: number;
  /** This process's rank in a data-parallel job, from 0 to worldSize − 1; default 0. */
  rank?: number;
  /** Number of ranks sharing each epoch; default 1. */
  worldSize?: number;
  /** Worker count; default max(1, logical cores − 1). */
  workers?: number;
  /** Seeds the epoch orders and every image's augmentation. */
  seed: number;
  /** Batches each worker prepares ahead; default 2. */
  prefetchBatches?: number;
  /**
   * Seconds to wait for the source to open or for an awaited batch before stopping with an error
   * naming it and the workers' state; default {@link DEFAULT_STALL_SECONDS}.
   */
  stallSeconds?: number;
}

/** One training batch of B images; `globals` and `locals` are crop-major. */
export interface MultiCropBatch {
  /** [G·B, 3, S, S] float32: global crop g of image b is row g·B + b. */
  globals: Float32Array;
  /** [Lc·B, 3, s, s] float32: local crop l of image b is row l·B + b. */
  locals: Float32Array;
  /** [B] class indices. */
  labels: Int32Array;
  /** [B] dataset indices. */
  indices: Int32Array;
}

/** One evaluation batch, always `batchSize` rows; rows from `count` on are zero padding. */
export interface EvalBatch {
  /** [batchSize, 3, size, size] float32, normalised. */
  images: Float32Array;
  /** [batchSize] class indices; −1 in padding rows. */
  labels: Int32Array;
  /** [count] dataset indices. */
  indices: Int32Array;
  /** Number of real images (batchSize except, possibly, in the last batch). */
  count: number;
  /** Number of real images the whole iteration delivers (the source's length). */
  total: number;
}

/**
 * Seconds a batch pipeline waits for its source to open, or for the batch its consumer awaits,
 * before it stops with an error that names it, the requests in flight and what each worker is
 * doing.
 */
export const DEFAULT_STALL_SECONDS = 60;

/** max(1, logical cores − 1): leaves one core to the main thread. */
export function defaultWorkerCount(): number {
  return Math.max(1, (navigator.hardwareConcurrency ?? 1) - 1);
}

/**
 * The order in which epoch `epoch` visits `n` images: a Fisher–Yates shuffle drawn from
 * `new Rng(seed).fork("epoch:<epoch>")`. Returns the n dataset indices.
 */
export function epochOrder(n: number, seed: number, epoch: number): Int32Array {
  const rng = new Rng(seed).fork(`epoch:${epoch}`);
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

/** Multi-crop training batches from a worker pool; call {@link MultiCropLoader.close} when done. */
export class MultiCropLoader {
  /** The options the loader was created with. */
  readonly options: Readonly<MultiCropLoaderOptions>;
  #pool: LoaderPool | null = null;
  #length = 0;
  #classes: readonly string[] = [];

  /** Checks the options; {@link MultiCropLoader.open} then starts the workers. */
  constructor(options: MultiCropLoaderOptions) {
    checkMultiCropConfig(options.crops);
    requirePositiveInteger("batchSize", options.batchSize);
    requirePositiveInteger("workers", options.workers ?? 1);
    requirePositiveInteger("prefetchBatches", options.prefetchBatches ?? 1);
    requirePositiveSeconds(options.stallSeconds ?? DEFAULT_STALL_SECONDS);
    requireRank(options.rank ?? 0, options.worldSize ?? 1);
    if (!Number.isSafeInteger(options.seed)) {
      throw new Error(`MultiCropLoader seed must be a safe integer, got ${options.seed}`);
    }
    this.options = options;
  }

  /** Creates a loader and opens it. */
  static async create(options: MultiCropLoaderOptions): Promise<MultiCropLoader> {
    const loader = new MultiCropLoader(options);
    await loader.open();
    return loader;
  }

  /**
   * Starts the workers and reads the dataset's size; throws (and stops the workers) if the source
   * cannot be opened or a rank's shard holds fewer images than one batch.
   */
  async open(): Promise<void> {
    if (this.#pool) return;
    const pool = loaderPool(this.options.workers ?? defaultWorkerCount());
    try {
      const stallSeconds = this.options.stallSeconds ?? DEFAULT_STALL_SECONDS;
      const info = await openInfo(pool, this.options.source, stallSeconds);
      const worldSize = this.options.worldSize ?? 1;
      const shard = shardSize(info.length, worldSize);
      if (shard < this.options.batchSize) {
        const perRank = worldSize > 1 ? `, ${shard} per rank over ${worldSize} ranks` : "";
        throw new Error(
          `the data source has ${info.length} images${perRank}, fewer than one batch of ` +
            `${this.options.batchSize}`,
        );
      }
      this.#length = info.length;
      this.#classes = info.classes;
      this.#pool = pool;
    } catch (error) {
      pool.close();
      throw error;
    }
  }

  /** Number of images in the source. */
  get length(): number {
    this.#opened();
    return this.#length;
  }

  /** The source's class names. */
  get classes(): readonly string[] {
    this.#opened();
    return this.#classes;
  }

  /** Images this rank visits per epoch: ceil(length / worldSize), padding included. */
  get shardLength(): number {
    return shardSize(this.length, this.options.worldSize ?? 1);
  }

  /**
   * Batches per epoch, the same on every rank: floor(shardLength / batchSize) (the last partial
   * batch is dropped).
   */
  get itersPerEpoch(): number {
    return Math.floor(this.shardLength / this.options.batchSize);
  }

  /**
   * This rank's batches of epoch `epoch` (a non-negative integer), in order, from batch `start` on
   * (to resume an interrupted epoch: the order, the shard and every augmentation depend only on
   * the seed, the epoch, the rank, the world size and the image). A worker's failure (an image
   * that cannot be decoded, say) rejects the iteration with the worker's message; a batch awaited
   * for `stallSeconds` rejects it with a message naming the batch and the workers' state.
   */
  async *epoch(epoch: number, start = 0): AsyncIterableIterator<MultiCropBatch> {
    requireNonNegativeInteger("epoch", epoch);
    requireNonNegativeInteger("start", start);
    const pool = this.#opened();
    const { batchSize, source, crops, seed } = this.options;
    const order = shardIndices(
      epochOrder(this.#length, seed, epoch),
      this.options.rank ?? 0,
      this.options.worldSize ?? 1,
    );
    const iters = this.itersPerEpoch;
    const depth = pool.size * (this.options.prefetchBatches ?? 2);
    const request = (k: number): Promise<MultiCropBatch> =>
      pool.run({
        type: "multiCrop",
        source,
        crops,
        seed,
        epoch,
        indices: order.slice(k * batchSize, (k + 1) * batchSize),
      }, `batch ${k + 1} of ${iters}`);
    const stallSeconds = this.options.stallSeconds ?? DEFAULT_STALL_SECONDS;
    const what = `epoch ${epoch} of ${describeSource(source)}`;
    yield* inOrder(Math.max(0, iters - start), depth, (k) => request(start + k), {
      seconds: stallSeconds,
      stalled: (k, inFlight) =>
        pool.stallError(`batch ${start + k + 1} of ${iters}`, what, stallSeconds, inFlight),
    });
  }

  /** Stops the workers; pending batches reject. */
  close(): void {
    this.#pool?.close();
    this.#pool = null;
  }

  #opened(): LoaderPool {
    if (!this.#pool) throw new Error("MultiCropLoader is not open: call open() or create() first");
    return this.#pool;
  }
}

/**
 * Evaluation batches of a source in dataset order, transformed by `evalTransform` (shorter side
 * to round(size·256/224) bicubic, centre crop `size`, normalise) in `workers` workers, which stop
 * when the iteration ends. Each batch has `batchSize` rows; the last may be padded (see
 * {@link EvalBatch.count}). An opening or a batch awaited for `stallSeconds` ends the iteration
 * with an error naming it and the workers' state. With `part`, only that part of the source: the
 * images from ⌊n·rank/parts⌋ to ⌊n·(rank + 1)/parts⌋ (one data-parallel rank's share, the parts
 * in rank order making up the whole).
 */
export async function* evalBatches(
  source: SourceSpec,
  size: number,
  batchSize: number,
  workers: number = defaultWorkerCount(),
  stallSeconds: number = DEFAULT_STALL_SECONDS,
  part: SourcePart = { rank: 0, parts: 1 },
): AsyncIterableIterator<EvalBatch> {
  requirePositiveInteger("size", size);
  requirePositiveInteger("batchSize", batchSize);
  requirePositiveInteger("workers", workers);
  requirePositiveSeconds(stallSeconds);
  requireRank(part.rank, part.parts);
  const resize = Math.round(size * 256 / 224);
  yield* sourceBatches(source, batchSize, workers, stallSeconds, part, (indices) => ({
    type: "eval",
    source,
    size,
    resize,
    rows: batchSize,
    indices,
  }));
}

/** One data-parallel rank's share of a source: part `rank` of `parts` contiguous parts. */
export interface SourcePart {
  /** This rank, 0 … parts − 1. */
  readonly rank: number;
  /** The number of parts (ranks). */
  readonly parts: number;
}

/**
 * The images of `part` of a source of `length` images: indices `first` … `first + count − 1`,
 * from ⌊length·rank/parts⌋ to ⌊length·(rank + 1)/parts⌋.
 */
export function partRange(length: number, part: SourcePart): { first: number; count: number } {
  const first = Math.floor(length * part.rank / part.parts);
  return { first, count: Math.floor(length * (part.rank + 1) / part.parts) - first };
}

/** Options of {@link randomCropBatches}. */
export interface RandomCropBatchOptions {
  /** Output side in pixels. */
  size: number;
  /** Rows per batch; the last batch is zero-padded (see {@link EvalBatch.count}). */
  batchSize: number;
  /** Seeds every image's crop and flip. */
  seed: number;
  /** The epoch (a non-negative integer): each epoch draws new crops. */
  epoch: number;
  /** Area-scale range of RandomResizedCrop (default [0.08, 1], torchvision's). */
  scale?: readonly [number, number];
  /** Worker count; default max(1, logical cores − 1). */
  workers?: number;
  /** Seconds to wait for the opening or an awaited batch; default {@link DEFAULT_STALL_SECONDS}. */
  stallSeconds?: number;
}

/**
 * The training transform of linear probing over a whole source, in dataset order: each image is
 * RandomResizedCrop'd (scale `scale`, ratio 3/4–4/3, resized bilinear to `size`), flipped left to
 * right with p 0.5 and normalised, in `workers` workers that stop when the iteration ends. Image
 * i's box and then its flip are drawn from `new Rng(seed).fork("linear:<epoch>:<i>")`, so the
 * result depends only on the seed, the epoch and the image. Batches are shaped as
 * {@link evalBatches}'s.
 */
export async function* randomCropBatches(
  source: SourceSpec,
  options: RandomCropBatchOptions,
): AsyncIterableIterator<EvalBatch> {
  const { size, batchSize, seed, epoch } = options;
  const scale = options.scale ?? [0.08, 1];
  const workers = options.workers ?? defaultWorkerCount();
  const stallSeconds = options.stallSeconds ?? DEFAULT_STALL_SECONDS;
  requirePositiveInteger("size", size);
  requirePositiveInteger("batchSize", batchSize);
  requirePositiveInteger("workers", workers);
  requireNonNegativeInteger("epoch", epoch);
  requirePositiveSeconds(stallSeconds);
  if (!Number.isSafeInteger(seed)) throw new Error(`seed must be a safe integer, got ${seed}`);
  if (!(scale[0] > 0 && scale[0] <= scale[1] && scale[1] <= 1)) {
    throw new Error(`scale must satisfy 0 < low ≤ high ≤ 1, got [${scale[0]}, ${scale[1]}]`);
  }
  yield* sourceBatches(
    source,
    batchSize,
    workers,
    stallSeconds,
    { rank: 0, parts: 1 },
    (indices) => ({
      type: "randomCrop",
      source,
      size,
      scale,
      seed,
      epoch,
      rows: batchSize,
      indices,
    }),
  );
}

/**
 * Every image of `source` in dataset order, in batches of `batchSize` rows (the last one
 * zero-padded, see {@link EvalBatch.count}), each made by the worker task `task` returns for its
 * dataset indices; up to 2 · `workers` batches are in flight, and an opening or a batch awaited
 * for `stallSeconds` ends the iteration with an error naming it and the workers' state.
 */
async function* sourceBatches(
  source: SourceSpec,
  batchSize: number,
  workers: number,
  stallSeconds: number,
  part: SourcePart,
  task: (indices: Int32Array<ArrayBuffer>) => Extract<WorkerTask, { type: "eval" | "randomCrop" }>,
): AsyncIterableIterator<EvalBatch> {
  const pool = loaderPool(workers);
  try {
    const info = await openInfo(pool, source, stallSeconds);
    const { first, count: length } = partRange(info.length, part);
    const batches = Math.ceil(length / batchSize);
    const label = (k: number) => `batch ${k + 1} of ${batches}`;
    const request = (k: number): Promise<EvalBatch> => {
      const start = k * batchSize;
      const count = Math.min(batchSize, length - start);
      const indices = Int32Array.from({ length: count }, (_, i) => first + start + i);
      return pool.run(task(indices), label(k)).then((result) => ({
        ...result,
        count,
        total: length,
      }));
    };
    const what = describeSource(source);
    yield* inOrder(batches, 2 * workers, request, {
      seconds: stallSeconds,
      stalled: (k, inFlight) => pool.stallError(label(k), what, stallSeconds, inFlight),
    });
  } finally {
    pool.close();
  }
}

/**
 * The size and classes of `source`, opened by a worker of `pool`; an opening that takes
 * `stallSeconds` throws an error naming the source and the workers' state.
 */
function openInfo(
  pool: LoaderPool,
  source: SourceSpec,
  stallSeconds: number,
): Promise<WorkerResults["info"]> {
  const label = "the opening";
  return withDeadline(
    pool.run({ type: "info", source }, label),
    stallSeconds,
    () => pool.stallError(label, describeSource(source), stallSeconds, 1),
  );
}

/** The pool of `loader_worker.ts` workers. */
type LoaderPool = WorkerPool<WorkerTask, WorkerResults>;

/** A pool of `count` `loader_worker.ts` workers. */
function loaderPool(count: number): LoaderPool {
  return new WorkerPool(new URL("./loader_worker.ts", import.meta.url), count);
}

/** Throws unless `value` is a positive integer; `name` names it in the message. */
export function requirePositiveInteger(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`${name} must be a positive integer, got ${value}`);
  }
}

/** Throws unless `value` is a non-negative integer; `name` names it in the message. */
export function requireNonNegativeInteger(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 0) {
    throw new Error(`${name} must be a non-negative integer, got ${value}`);
  }
}

/** Throws unless `value` (the stall limit `stallSeconds`) is a positive, finite number. */
export function requirePositiveSeconds(value: number): void {
  if (!(value > 0 && Number.isFinite(value))) {
    throw new Error(`stallSeconds must be a positive number of seconds, got ${value}`);
  }
}
