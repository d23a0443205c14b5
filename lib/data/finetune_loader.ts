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
import type {
  FinetuneReply,
  FinetuneRequest,
  FinetuneResults,
  FinetuneTask,
} from "./finetune_worker.ts";
import {
  DEFAULT_STALL_SECONDS,
  defaultWorkerCount,
  epochOrder,
  type EvalBatch,
  type SourcePart,
} from "./loader.ts";
import { requireRank, shardIndices, shardSize } from "./shard.ts";
import { describeSource, type SourceSpec } from "./source.ts";

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
  const pool = new FinetunePool(workers);
  try {
    const what = describeSource(source);
    const info = await pool.within(
      pool.run({ type: "info", source }),
      stallSeconds,
      `opening ${what}`,
    );
    const iters = finetuneItersPerEpoch(info.length, batchSize, worldSize);
    if (iters === 0) {
      throw new Error(
        `${what} has ${info.length} images, ${shardSize(info.length, worldSize)} for this rank, ` +
          `fewer than one batch of ${batchSize}`,
      );
    }
    const order = shardIndices(epochOrder(info.length, seed, epoch), rank, worldSize);
    yield* pool.inOrder(Math.max(0, iters - start), 2 * workers, stallSeconds, (k) => ({
      label: `batch ${start + k + 1} of ${iters} of epoch ${epoch} of ${what}`,
      task: {
        type: "train",
        source,
        size,
        config,
        seed,
        epoch,
        indices: order.slice((start + k) * batchSize, (start + k + 1) * batchSize),
      },
    }));
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
  const pool = new FinetunePool(workers);
  try {
    const what = describeSource(source);
    const info = await pool.within(
      pool.run({ type: "info", source }),
      stallSeconds,
      `opening ${what}`,
    );
    const first = Math.floor(info.length * part.rank / part.parts);
    const length = Math.floor(info.length * (part.rank + 1) / part.parts) - first;
    const batches = Math.ceil(length / batchSize);
    const requests = pool.inOrder(batches, 2 * workers, stallSeconds, (k) => ({
      label: `evaluation batch ${k + 1} of ${batches} of ${what}`,
      task: {
        type: "eval",
        source,
        size,
        resizeImages,
        cropPct,
        rows: batchSize,
        indices: Int32Array.from(
          { length: Math.min(batchSize, length - k * batchSize) },
          (_, i) => first + k * batchSize + i,
        ),
      },
    }));
    for await (const result of requests) {
      yield { ...result, count: result.indices.length, total: length };
    }
  } finally {
    pool.close();
  }
}

/** A request of {@link FinetunePool.inOrder}: a task and its name for messages. */
interface Labelled<K extends FinetuneTask["type"]> {
  label: string;
  task: Extract<FinetuneTask, { type: K }>;
}

interface Pending {
  resolve: (result: FinetuneResults[FinetuneTask["type"]]) => void;
  reject: (error: Error) => void;
}

/** Workers running `finetune_worker.ts`, each given one request at a time from a shared queue. */
class FinetunePool {
  #idle: Worker[] = [];
  #all: Worker[] = [];
  #queue: { request: FinetuneRequest; pending: Pending }[] = [];
  #pending = new Map<number, Pending>();
  #nextId = 0;
  #failure: Error | null = null;

  constructor(count: number) {
    const url = new URL("./finetune_worker.ts", import.meta.url);
    for (let i = 0; i < count; i++) {
      const worker = new Worker(url, { type: "module" });
      worker.onmessage = (event: MessageEvent<FinetuneReply>) => this.#finish(worker, event.data);
      worker.onerror = (event: ErrorEvent) => {
        event.preventDefault();
        this.#fail(new Error(`fine-tuning data worker ${i + 1} crashed: ${event.message}`));
      };
      worker.onmessageerror = () => {
        this.#fail(new Error(`a reply from fine-tuning data worker ${i + 1} was lost`));
      };
      this.#all.push(worker);
      this.#idle.push(worker);
    }
  }

  /** Gives a task to the next idle worker; resolves with its result, rejects with its error. */
  run<K extends FinetuneTask["type"]>(
    task: Extract<FinetuneTask, { type: K }>,
  ): Promise<FinetuneResults[K]> {
    return new Promise((resolve, reject) => {
      if (this.#failure) return reject(this.#failure);
      const pending = { resolve: resolve as Pending["resolve"], reject };
      this.#queue.push({ request: { id: this.#nextId++, task }, pending });
      this.#dispatch();
    });
  }

  /** `promise`, or an error naming `label` once `seconds` pass before it settles. */
  within<T>(promise: Promise<T>, seconds: number, label: string): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const busy = this.#all.length - this.#idle.length;
        reject(
          new Error(
            `the fine-tuning data loader waited ${seconds} s for ${label} and stopped ` +
              `(${busy} of ${this.#all.length} workers busy, ${this.#queue.length} requests queued)`,
          ),
        );
      }, seconds * 1000);
    });
    return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
  }

  /**
   * Yields the results of request(0), …, request(count − 1) in order, keeping up to `depth` in
   * flight; a failure ahead of the consumer surfaces when the consumer reaches it.
   */
  async *inOrder<K extends FinetuneTask["type"]>(
    count: number,
    depth: number,
    seconds: number,
    request: (k: number) => Labelled<K>,
  ): AsyncGenerator<FinetuneResults[K]> {
    const inFlight: { label: string; promise: Promise<FinetuneResults[K]> }[] = [];
    let next = 0;
    const refill = () => {
      while (next < count && inFlight.length < depth) {
        const { label, task } = request(next++);
        const promise = this.run(task);
        promise.catch(() => {});
        inFlight.push({ label, promise });
      }
    };
    refill();
    while (inFlight.length > 0) {
      const { label, promise } = inFlight.shift()!;
      const result = await this.within(promise, seconds, label);
      refill();
      yield result;
    }
  }

  /** Terminates every worker; queued and running requests reject. */
  close(): void {
    for (const worker of this.#all) worker.terminate();
    this.#fail(new Error("the fine-tuning data loader was closed"));
    this.#all = [];
    this.#idle = [];
  }

  #dispatch(): void {
    while (this.#idle.length > 0 && this.#queue.length > 0) {
      const worker = this.#idle.shift()!;
      const { request, pending } = this.#queue.shift()!;
      this.#pending.set(request.id, pending);
      worker.postMessage(request);
    }
  }

  #finish(worker: Worker, reply: FinetuneReply): void {
    const pending = this.#pending.get(reply.id);
    if (!pending) return;
    this.#pending.delete(reply.id);
    this.#idle.push(worker);
    if ("error" in reply) pending.reject(new Error(reply.error));
    else pending.resolve(reply.result);
    this.#dispatch();
  }

  #fail(error: Error): void {
    this.#failure ??= error;
    for (const pending of this.#pending.values()) pending.reject(error);
    for (const { pending } of this.#queue) pending.reject(error);
    this.#pending.clear();
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

function requirePositiveSeconds(value: number): void {
  if (!(value > 0 && Number.isFinite(value))) {
    throw new Error(`stallSeconds must be a positive number of seconds, got ${value}`);
  }
}
