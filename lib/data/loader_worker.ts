/**
 * The data-loader worker: opens a {@link SourceSpec} (once, on first use) and performs one task
 * at a time — report the source's size, build a multi-crop batch, an evaluation batch or a
 * linear-probing training batch (RandomResizedCrop + flip) — transferring the result buffers
 * back, through `worker_scope.ts` (which also answers pings).
 *
 * Started by `loader.ts` as `new Worker(new URL("./loader_worker.ts", import.meta.url), { type:
 * "module" })`; never imported for its exports except the message types.
 *
 * @module
 */

import { augmentationStream } from "./streams.ts";
import { Rng } from "../runtime/rng.ts";
import sharp from "sharp";
import {
  evalTransform,
  flipHorizontal,
  multiCrop,
  type MultiCropConfig,
  normalize,
  randomResizedCropBox,
} from "./augment.ts";
import type { SourceSpec } from "./source.ts";
import { imageBatch, serve, sourceFor, sourceInfo } from "./worker_scope.ts";

/** What a worker is asked to do. */
export type WorkerTask =
  | { type: "info"; source: SourceSpec }
  | {
    type: "multiCrop";
    source: SourceSpec;
    crops: MultiCropConfig;
    seed: number;
    epoch: number;
    /** Dataset indices of the batch, in batch order. */
    indices: Int32Array<ArrayBuffer>;
  }
  | {
    type: "eval";
    source: SourceSpec;
    size: number;
    resize: number;
    /** Rows of the output buffers; rows past `indices.length` stay zero (labels −1). */
    rows: number;
    indices: Int32Array<ArrayBuffer>;
  }
  | {
    type: "randomCrop";
    source: SourceSpec;
    size: number;
    /** Area-scale range of RandomResizedCrop. */
    scale: readonly [number, number];
    seed: number;
    epoch: number;
    /** Rows of the output buffers; rows past `indices.length` stay zero (labels −1). */
    rows: number;
    indices: Int32Array<ArrayBuffer>;
  };

/** The result of each kind of task. */
export interface WorkerResults {
  /** The source's image count and class names. */
  info: { length: number; classes: string[] };
  /** A multi-crop batch of B = indices.length images. */
  multiCrop: {
    /** Crop-major [G·B, 3, S, S]: global crop g of image b is row g·B + b. */
    globals: Float32Array;
    /** Crop-major [Lc·B, 3, s, s]. */
    locals: Float32Array;
    labels: Int32Array;
    indices: Int32Array;
  };
  /** An evaluation batch: `rows` normalised images [rows, 3, size, size] and labels. */
  eval: { images: Float32Array; labels: Int32Array; indices: Int32Array };
  /** A batch of `rows` randomly cropped and flipped images [rows, 3, size, size] and labels. */
  randomCrop: { images: Float32Array; labels: Int32Array; indices: Int32Array };
}

/** Builds a crop-major multi-crop batch; image i is augmented by `Rng(seed).fork("<e>:<i>")`. */
async function multiCropBatch(
  task: Extract<WorkerTask, { type: "multiCrop" }>,
): Promise<[WorkerResults["multiCrop"], Transferable[]]> {
  const { crops, seed, epoch, indices } = task;
  const source = await sourceFor(task.source);
  const batch = indices.length;
  const globalSize = 3 * crops.globalCropSize ** 2;
  const localSize = 3 * crops.localCropSize ** 2;
  const globals = new Float32Array(crops.globalCropsNumber * batch * globalSize);
  const locals = new Float32Array(crops.localCropsNumber * batch * localSize);
  const labels = new Int32Array(batch);
  for (let b = 0; b < batch; b++) {
    const index = indices[b];
    const views = await multiCrop(
      await source.load(index),
      crops,
      augmentationStream(new Rng(seed), epoch, index),
    );
    for (let g = 0; g < crops.globalCropsNumber; g++) {
      globals.set(views[g], (g * batch + b) * globalSize);
    }
    for (let l = 0; l < crops.localCropsNumber; l++) {
      locals.set(views[crops.globalCropsNumber + l], (l * batch + b) * localSize);
    }
    labels[b] = source.label(index);
  }
  return [
    { globals, locals, labels, indices },
    [globals.buffer, locals.buffer, labels.buffer, indices.buffer],
  ];
}

/**
 * Builds a batch of `rows` rows, the images in `indices` first (zero padding after), each through
 * the linear-probing train transform: RandomResizedCrop(size, scale, ratio 3/4–4/3, bilinear),
 * then a horizontal flip with p 0.5 (`u < 0.5`), then normalise. Image i draws its crop box and
 * then its flip from `Rng(seed).fork("linear:<epoch>:<i>")`.
 */
async function randomCropBatch(
  task: Extract<WorkerTask, { type: "randomCrop" }>,
): Promise<[WorkerResults["randomCrop"], Transferable[]]> {
  const { size, scale, seed, epoch, rows, indices } = task;
  return await imageBatch(task.source, size, rows, indices, async (image, i) => {
    const rng = new Rng(seed).fork(`linear:${epoch}:${i}`);
    const box = randomResizedCropBox(image.width, image.height, scale, rng);
    const flip = rng.uniform() < 0.5;
    const raw = { width: image.width, height: image.height, channels: 3 as const };
    const buffer = await sharp(image.data, { raw })
      .extract(box)
      .resize(size, size, { kernel: "linear", fit: "fill" })
      .raw()
      .toBuffer();
    let pixels: Uint8Array = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.length);
    if (flip) pixels = flipHorizontal(pixels, size, size);
    return normalize(pixels, size, size);
  });
}

/** Runs a task; returns its result and the buffers to transfer with it. */
async function perform(
  task: WorkerTask,
): Promise<[WorkerResults[WorkerTask["type"]], Transferable[]]> {
  switch (task.type) {
    case "info":
      return await sourceInfo(task.source);
    case "multiCrop":
      return await multiCropBatch(task);
    case "eval": {
      const { size, resize, rows, indices } = task;
      return await imageBatch(
        task.source,
        size,
        rows,
        indices,
        (image) => evalTransform(image, size, resize),
      );
    }
    case "randomCrop":
      return await randomCropBatch(task);
  }
}

serve(perform);
