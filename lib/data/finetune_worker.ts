/**
 * The fine-tuning data worker: opens a {@link SourceSpec} (once, on first use) and performs one
 * task at a time — report the source's size, build a training batch (the fine-tuning train
 * transform) or an evaluation batch — transferring the result buffers back, through
 * `worker_scope.ts` (which also answers pings).
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
import type { SourceSpec } from "./source.ts";
import { imageBatch, serve, sourceInfo } from "./worker_scope.ts";

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

/** Runs a task; returns its result and the buffers to transfer with it. */
async function perform(
  task: FinetuneTask,
): Promise<[FinetuneResults[FinetuneTask["type"]], Transferable[]]> {
  switch (task.type) {
    case "info":
      return await sourceInfo(task.source);
    case "train": {
      // Image i is augmented by finetuneStream(seed, epoch, i).
      const { size, config, seed, epoch, indices } = task;
      return await imageBatch(
        task.source,
        size,
        indices.length,
        indices,
        (image, i) => finetuneTrainTransform(image, size, config, finetuneStream(seed, epoch, i)),
      );
    }
    case "eval": {
      const { size, resizeImages, cropPct, rows, indices } = task;
      return await imageBatch(
        task.source,
        size,
        rows,
        indices,
        (image) => finetuneEvalTransform(image, size, resizeImages, cropPct),
      );
    }
  }
}

serve(perform);
