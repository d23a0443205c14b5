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
import type { WorkerReply, WorkerRequest, WorkerResults, WorkerTask } from "./loader_worker.ts";
import type { SourceSpec } from "./source.ts";

/** Options of a {@link MultiCropLoader}. */
export interface MultiCropLoaderOptions {
  /** Where the images come from. */
  source: SourceSpec;
  /** The multi-crop recipe. */
  crops: MultiCropConfig;
  /** Images per batch, B. */
  batchSize: number;
  /** Worker count; default max(1, logical cores − 1). */
  workers?: number;
  /** Seeds the epoch orders and every image's augmentation. */
  seed: number;
  /** Batches each worker prepares ahead; default 2. */
  prefetchBatches?: number;
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
}

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
  #pool: WorkerPool | null = null;
  #length = 0;
  #classes: readonly string[] = [];

  /** Checks the options; {@link MultiCropLoader.open} then starts the workers. */
  constructor(options: MultiCropLoaderOptions) {
    checkMultiCropConfig(options.crops);
    requirePositiveInteger("batchSize", options.batchSize);
    requirePositiveInteger("workers", options.workers ?? 1);
    requirePositiveInteger("prefetchBatches", options.prefetchBatches ?? 1);
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
   * cannot be opened or holds fewer images than one batch.
   */
  async open(): Promise<void> {
    if (this.#pool) return;
    const pool = new WorkerPool(this.options.workers ?? defaultWorkerCount());
    try {
      const info = await pool.run({ type: "info", source: this.options.source });
      if (info.length < this.options.batchSize) {
        throw new Error(
          `the data source has ${info.length} images, fewer than one batch of ` +
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

  /** Batches per epoch: floor(length / batchSize) (the last partial batch is dropped). */
  get itersPerEpoch(): number {
    return Math.floor(this.length / this.options.batchSize);
  }

  /**
   * The batches of epoch `epoch` (a non-negative integer), in order, from batch `start` on (to
   * resume an interrupted epoch: the order and every augmentation depend only on the seed, the
   * epoch and the image). A worker's failure (an image that cannot be decoded, say) rejects the
   * iteration with the worker's message.
   */
  async *epoch(epoch: number, start = 0): AsyncIterableIterator<MultiCropBatch> {
    requireNonNegativeInteger("epoch", epoch);
    requireNonNegativeInteger("start", start);
    const pool = this.#opened();
    const { batchSize, source, crops, seed } = this.options;
    const order = epochOrder(this.#length, seed, epoch);
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
      });
    yield* inOrder(Math.max(0, iters - start), depth, (k) => request(start + k));
  }

  /** Stops the workers; pending batches reject. */
  close(): void {
    this.#pool?.close();
    this.#pool = null;
  }

  #opened(): WorkerPool {
    if (!this.#pool) throw new Error("MultiCropLoader is not open: call open() or create() first");
    return this.#pool;
  }
}

/**
 * Evaluation batches of a source in dataset order, transformed by `evalTransform` (shorter side
 * to round(size·256/224) bicubic, centre crop `size`, normalise) in `workers` workers, which stop
 * when the iteration ends. Each batch has `batchSize` rows; the last may be padded (see
 * {@link EvalBatch.count}).
 */
export async function* evalBatches(
  source: SourceSpec,
  size: number,
  batchSize: number,
  workers: number = defaultWorkerCount(),
): AsyncIterableIterator<EvalBatch> {
  requirePositiveInteger("size", size);
  requirePositiveInteger("batchSize", batchSize);
  requirePositiveInteger("workers", workers);
  const resize = Math.round(size * 256 / 224);
  yield* sourceBatches(source, batchSize, workers, (indices) => ({
    type: "eval",
    source,
    size,
    resize,
    rows: batchSize,
    indices,
  }));
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
  requirePositiveInteger("size", size);
  requirePositiveInteger("batchSize", batchSize);
  requirePositiveInteger("workers", workers);
  requireNonNegativeInteger("epoch", epoch);
  if (!Number.isSafeInteger(seed)) throw new Error(`seed must be a safe integer, got ${seed}`);
  if (!(scale[0] > 0 && scale[0] <= scale[1] && scale[1] <= 1)) {
    throw new Error(`scale must satisfy 0 < low ≤ high ≤ 1, got [${scale[0]}, ${scale[1]}]`);
  }
  yield* sourceBatches(source, batchSize, workers, (indices) => ({
    type: "randomCrop",
    source,
    size,
    scale,
    seed,
    epoch,
    rows: batchSize,
    indices,
  }));
}

/**
 * Every image of `source` in dataset order, in batches of `batchSize` rows (the last one
 * zero-padded, see {@link EvalBatch.count}), each made by the worker task `task` returns for its
 * dataset indices; up to 2 · `workers` batches are in flight.
 */
async function* sourceBatches(
  source: SourceSpec,
  batchSize: number,
  workers: number,
  task: (indices: Int32Array<ArrayBuffer>) => Extract<WorkerTask, { type: "eval" | "randomCrop" }>,
): AsyncIterableIterator<EvalBatch> {
  const pool = new WorkerPool(workers);
  try {
    const { length } = await pool.run({ type: "info", source });
    const request = (k: number): Promise<EvalBatch> => {
      const start = k * batchSize;
      const count = Math.min(batchSize, length - start);
      const indices = Int32Array.from({ length: count }, (_, i) => start + i);
      return pool.run(task(indices)).then((result) => ({ ...result, count }));
    };
    yield* inOrder(Math.ceil(length / batchSize), 2 * workers, request);
  } finally {
    pool.close();
  }
}

/**
 * Yields request(0), …, request(count − 1) in order, keeping up to `depth` requests in flight.
 * Every request gets a rejection handler at once, so a failure ahead of the consumer is not an
 * unhandled rejection; it surfaces when the consumer reaches it.
 */
async function* inOrder<T>(
  count: number,
  depth: number,
  request: (k: number) => Promise<T>,
): AsyncIterableIterator<T> {
  const inFlight: Promise<T>[] = [];
  let next = 0;
  const refill = () => {
    while (next < count && inFlight.length < depth) {
      const promise = request(next++);
      promise.catch(() => {});
      inFlight.push(promise);
    }
  };
  refill();
  while (inFlight.length > 0) {
    const result = await inFlight.shift()!;
    refill();
    yield result;
  }
}

interface Job {
  request: WorkerRequest;
  resolve: (result: WorkerResults[WorkerTask["type"]]) => void;
  reject: (error: Error) => void;
}

/** Workers running `loader_worker.ts`, each given one request at a time from a shared queue. */
class WorkerPool {
  #workers: Worker[] = [];
  #idle: Worker[] = [];
  #queue: Job[] = [];
  #running = new Map<Worker, Job>();
  #nextId = 0;
  #failure: Error | null = null;

  constructor(count: number) {
    const url = new URL("./loader_worker.ts", import.meta.url);
    for (let i = 0; i < count; i++) {
      const worker = new Worker(url, { type: "module" });
      worker.onmessage = (event: MessageEvent<WorkerReply>) => this.#finish(worker, event.data);
      worker.onerror = (event: ErrorEvent) => {
        event.preventDefault();
        this.#fail(new Error(`a data loader worker crashed: ${event.message}`));
      };
      this.#workers.push(worker);
      this.#idle.push(worker);
    }
  }

  get size(): number {
    return this.#workers.length;
  }

  /** Gives a task to the next idle worker; resolves with its result, rejects with its error. */
  run<K extends WorkerTask["type"]>(
    task: Extract<WorkerTask, { type: K }>,
  ): Promise<WorkerResults[K]> {
    return new Promise((resolve, reject) => {
      if (this.#failure) return reject(this.#failure);
      const request = { id: this.#nextId++, task };
      this.#queue.push({ request, resolve: resolve as Job["resolve"], reject });
      this.#dispatch();
    });
  }

  /** Terminates every worker; queued and running requests reject. */
  close(): void {
    for (const worker of this.#workers) worker.terminate();
    this.#fail(new Error("the data loader was closed"));
    this.#workers = [];
    this.#idle = [];
  }

  #dispatch(): void {
    while (this.#idle.length > 0 && this.#queue.length > 0) {
      const worker = this.#idle.shift()!;
      const job = this.#queue.shift()!;
      this.#running.set(worker, job);
      worker.postMessage(job.request);
    }
  }

  #finish(worker: Worker, reply: WorkerReply): void {
    const job = this.#running.get(worker);
    if (!job) return;
    this.#running.delete(worker);
    this.#idle.push(worker);
    if ("error" in reply) job.reject(new Error(reply.error));
    else job.resolve(reply.result);
    this.#dispatch();
  }

  #fail(error: Error): void {
    this.#failure ??= error;
    for (const job of [...this.#running.values(), ...this.#queue]) job.reject(error);
    this.#running.clear();
    this.#queue = [];
  }
}

function requirePositiveInteger(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`${name} must be a positive integer, got ${value}`);
  }
}

function requireNonNegativeInteger(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 0) {
    throw new Error(`${name} must be a non-negative integer, got ${value}`);
  }
}
