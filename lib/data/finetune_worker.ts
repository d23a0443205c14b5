/**
 * The fine-tuning data worker: opens a {@link SourceSpec} (once, on first use) and performs one
 * task at a time — report the source's size, build a training batch (the fine-tuning train
 * transform) or an evaluation batch — transferring the result buffers back. A failure is answered
 * with its message instead.
 *
 * Started by `finetune_loader.ts` as `new Worker(new URL("./finetune_worker.ts",
 * import.meta.url), { type: "module" })`; never imported for its exports except the message
 * types.
 *
 * @module
 */

import {
  finetuneEvalTransform,
  finetuneStream,
  finetuneTrainTransform,
  type FinetuneTransformConfig,
} from "./finetune_transform.ts";
import { type ImageSource, openSource, type SourceSpec } from "./source.ts";

/** What a fine-tuning worker is asked to do. */
export type FinetuneTask =
  | { type: "info"; source: SourceSpec }
  | {
    type: "train";
    source: SourceSpec;
    size: number;
    config: FinetuneTransformConfig;
    seed: number;
    epoch: number;
    /** Dataset indices of the batch, in batch order. */
    indices: Int32Array<ArrayBuffer>;
  }
  | {
    type: "eval";
    source: SourceSpec;
    size: number;
    resizeImages: boolean;
    cropPct: number;
    /** Rows of the output buffers; rows past `indices.length` stay zero (labels −1). */
    rows: number;
    indices: Int32Array<ArrayBuffer>;
  };

/** The result of each kind of task. */
export interface FinetuneResults {
  /** The source's image count and class names. */
  info: { length: number; classes: string[] };
  /** A training batch [B, 3, S, S] with its labels and dataset indices. */
  train: { images: Float32Array; labels: Int32Array; indices: Int32Array };
  /** An evaluation batch of `rows` rows [rows, 3, S, S], labels −1 in padding rows. */
  eval: { images: Float32Array; labels: Int32Array; indices: Int32Array };
}

/** A message to a worker; `id` pairs it with its reply. */
export interface FinetuneRequest {
  /** Request number, unique within a pool. */
  id: number;
  /** What to do. */
  task: FinetuneTask;
}

/** A worker's reply to the request with the same `id`: a result or an error message. */
export type FinetuneReply =
  | { id: number; result: FinetuneResults[FinetuneTask["type"]] }
  | { id: number; error: string };

interface WorkerScope {
  onmessage: ((event: MessageEvent<FinetuneRequest>) => void) | null;
  postMessage(message: FinetuneReply, transfer?: Transferable[]): void;
}

let opened: { key: string; source: ImageSource } | null = null;

/** The source of `spec`, opened on first use and kept while requests name the same spec. */
async function sourceFor(spec: SourceSpec): Promise<ImageSource> {
  const key = JSON.stringify(spec);
  if (opened?.key !== key) opened = { key, source: await openSource(spec) };
  return opened.source;
}

/** Builds a training batch; image i is augmented by {@link finetuneStream}(seed, epoch, i). */
async function trainBatch(
  task: Extract<FinetuneTask, { type: "train" }>,
): Promise<[FinetuneResults["train"], Transferable[]]> {
  const { size, config, seed, epoch, indices } = task;
  const source = await sourceFor(task.source);
  const imageSize = 3 * size * size;
  const images = new Float32Array(indices.length * imageSize);
  const labels = new Int32Array(indices.length);
  for (let b = 0; b < indices.length; b++) {
    const image = await source.load(indices[b]);
    const rng = finetuneStream(seed, epoch, indices[b]);
    images.set(finetuneTrainTransform(image, size, config, rng), b * imageSize);
    labels[b] = source.label(indices[b]);
  }
  return [{ images, labels, indices }, [images.buffer, labels.buffer, indices.buffer]];
}

/** Builds an evaluation batch of `rows` rows, the images in `indices` first, zero padding after. */
async function evalBatch(
  task: Extract<FinetuneTask, { type: "eval" }>,
): Promise<[FinetuneResults["eval"], Transferable[]]> {
  const { size, resizeImages, cropPct, rows, indices } = task;
  const source = await sourceFor(task.source);
  const imageSize = 3 * size * size;
  const images = new Float32Array(rows * imageSize);
  const labels = new Int32Array(rows).fill(-1);
  for (let b = 0; b < indices.length; b++) {
    const image = await source.load(indices[b]);
    images.set(finetuneEvalTransform(image, size, resizeImages, cropPct), b * imageSize);
    labels[b] = source.label(indices[b]);
  }
  return [{ images, labels, indices }, [images.buffer, labels.buffer, indices.buffer]];
}

/** Runs a task; returns its result and the buffers to transfer with it. */
async function perform(
  task: FinetuneTask,
): Promise<[FinetuneResults[FinetuneTask["type"]], Transferable[]]> {
  switch (task.type) {
    case "info": {
      const source = await sourceFor(task.source);
      return [{ length: source.length, classes: [...source.classes] }, []];
    }
    case "train":
      return await trainBatch(task);
    case "eval":
      return await evalBatch(task);
  }
}

const scope = globalThis as unknown as WorkerScope;

scope.onmessage = (event) => {
  const { id, task } = event.data;
  perform(task).then(
    ([result, transfer]) => scope.postMessage({ id, result }, transfer),
    (error: unknown) => {
      const message = error instanceof Error ? error.message : String(error);
      scope.postMessage({ id, error: message });
    },
  );
};
