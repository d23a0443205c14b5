/**
 * The data-loader worker: opens a {@link SourceSpec} (once, on first use) and performs one task
 * at a time — report the source's size, build a multi-crop batch, an evaluation batch or a
 * linear-probing training batch (RandomResizedCrop + flip) — transferring the result buffers
 * back. A failure is answered with its message instead. A ping is answered at once, even while a
 * batch is being made, to show that the worker is alive.
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
import { type ImageSource, openSource, type SourceSpec } from "./source.ts";

/** What a worker is asked to do. */
export type WorkerTask =
  | { type: "info"; source: SourceSpec }
  | { type: "ping" }
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
  /** Nothing: the reply itself shows that the worker is alive. */
  ping: Record<string, never>;
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

/** A message to a worker; `id` pairs it with its reply. */
export interface WorkerRequest {
  /** Request number, unique within a pool. */
  id: number;
  /** What to do. */
  task: WorkerTask;
}

/** A worker's reply to the request with the same `id`: a result or an error message. */
export type WorkerReply =
  | { id: number; result: WorkerResults[WorkerTask["type"]] }
  | { id: number; error: string };

/** The parts of the worker global scope used here. */
interface WorkerScope {
  onmessage: ((event: MessageEvent<WorkerRequest>) => void) | null;
  postMessage(message: WorkerReply, transfer?: Transferable[]): void;
}

const scope = globalThis as unknown as WorkerScope;

let opened: { key: string; source: ImageSource } | null = null;

/** The source of `spec`, opened on first use and kept while requests name the same spec. */
async function sourceFor(spec: SourceSpec): Promise<ImageSource> {
  const key = JSON.stringify(spec);
  if (opened?.key !== key) opened = { key, source: await openSource(spec) };
  return opened.source;
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

/** Builds an evaluation batch of `rows` rows, the images in `indices` first, zero padding after. */
async function evalBatch(
  task: Extract<WorkerTask, { type: "eval" }>,
): Promise<[WorkerResults["eval"], Transferable[]]> {
  const { size, resize, rows, indices } = task;
  const source = await sourceFor(task.source);
  const imageSize = 3 * size * size;
  const images = new Float32Array(rows * imageSize);
  const labels = new Int32Array(rows).fill(-1);
  for (let b = 0; b < indices.length; b++) {
    images.set(await evalTransform(await source.load(indices[b]), size, resize), b * imageSize);
    labels[b] = source.label(indices[b]);
  }
  return [{ images, labels, indices }, [images.buffer, labels.buffer, indices.buffer]];
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
  const source = await sourceFor(task.source);
  const imageSize = 3 * size * size;
  const images = new Float32Array(rows * imageSize);
  const labels = new Int32Array(rows).fill(-1);
  for (let b = 0; b < indices.length; b++) {
    const image = await source.load(indices[b]);
    const rng = new Rng(seed).fork(`linear:${epoch}:${indices[b]}`);
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
    images.set(normalize(pixels, size, size), b * imageSize);
    labels[b] = source.label(indices[b]);
  }
  return [{ images, labels, indices }, [images.buffer, labels.buffer, indices.buffer]];
}

/** Runs a task; returns its result and the buffers to transfer with it. */
async function perform(
  task: WorkerTask,
): Promise<[WorkerResults[WorkerTask["type"]], Transferable[]]> {
  switch (task.type) {
    case "info": {
      const source = await sourceFor(task.source);
      return [{ length: source.length, classes: [...source.classes] }, []];
    }
    case "ping":
      return [{}, []];
    case "multiCrop":
      return await multiCropBatch(task);
    case "eval":
      return await evalBatch(task);
    case "randomCrop":
      return await randomCropBatch(task);
  }
}

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
