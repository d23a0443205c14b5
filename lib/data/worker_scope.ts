/**
 * The worker side of a `worker_pool.ts` pool: {@link serve} answers each request with its task's
 * result (its buffers transferred) or the error's message, and answers a ping at once, even
 * while a batch is being made, to show that the worker is alive; {@link sourceFor} keeps the
 * worker's image source open between requests, and {@link sourceInfo} and {@link imageBatch} do
 * what every worker's tasks do with it.
 *
 * @module
 */

import { type ImageSource, openSource, type RawImage, type SourceSpec } from "./source.ts";
import type { WorkerReply, WorkerRequest } from "./worker_pool.ts";

/** The parts of the worker global scope used here. */
interface WorkerScope {
  onmessage: ((event: MessageEvent<WorkerRequest<{ type: string }>>) => void) | null;
  postMessage(message: WorkerReply, transfer?: Transferable[]): void;
}

/**
 * Makes this worker answer each request by `perform(task)`, which returns the result and the
 * buffers to transfer with it; a ping is answered with `{}`.
 */
export function serve<Task extends { type: string }>(
  perform: (task: Task) => Promise<[unknown, Transferable[]]>,
): void {
  const scope = globalThis as unknown as WorkerScope;
  scope.onmessage = (event) => {
    const { id, task } = event.data;
    if (task.type === "ping") return scope.postMessage({ id, result: {} });
    perform(task as Task).then(
      ([result, transfer]) => scope.postMessage({ id, result }, transfer),
      (error: unknown) => {
        const message = error instanceof Error ? error.message : String(error);
        scope.postMessage({ id, error: message });
      },
    );
  };
}

let opened: { key: string; source: ImageSource } | null = null;

/** The source of `spec`, opened on first use and kept while requests name the same spec. */
export async function sourceFor(spec: SourceSpec): Promise<ImageSource> {
  const key = JSON.stringify(spec);
  if (opened?.key !== key) opened = { key, source: await openSource(spec) };
  return opened.source;
}

/** The size and class names of the source of `spec`, with nothing to transfer. */
export async function sourceInfo(
  spec: SourceSpec,
): Promise<[{ length: number; classes: string[] }, Transferable[]]> {
  const source = await sourceFor(spec);
  return [{ length: source.length, classes: [...source.classes] }, []];
}

/** A batch of images as one tensor, with their labels and dataset indices. */
export interface ImageBatch {
  /** [rows, 3, S, S] float32. */
  images: Float32Array;
  /** [rows] class indices, −1 in padding rows. */
  labels: Int32Array;
  /** The dataset indices of the rows that hold images. */
  indices: Int32Array;
}

/**
 * A batch of `rows` rows of 3 × `size` × `size` values: row b is `transform` of image
 * `indices[b]` of the source of `spec`; rows past `indices.length` stay zero (labels −1). Returns
 * it with its buffers to transfer.
 */
export async function imageBatch(
  spec: SourceSpec,
  size: number,
  rows: number,
  indices: Int32Array<ArrayBuffer>,
  transform: (image: RawImage, index: number) => Float32Array | Promise<Float32Array>,
): Promise<[ImageBatch, Transferable[]]> {
  const source = await sourceFor(spec);
  const imageSize = 3 * size * size;
  const images = new Float32Array(rows * imageSize);
  const labels = new Int32Array(rows).fill(-1);
  for (let b = 0; b < indices.length; b++) {
    images.set(await transform(await source.load(indices[b]), indices[b]), b * imageSize);
    labels[b] = source.label(indices[b]);
  }
  return [{ images, labels, indices }, [images.buffer, labels.buffer, indices.buffer]];
}
