/**
 * Images/s of the training data pipeline alone ({@link MultiCropLoader}: JPEG decoding and the
 * multi-crop augmentation in worker threads) at the official ViT-S/16 recipe: two global crops of
 * 224 px (scale 0.25–1) and ten local crops of 96 px (scale 0.05–0.25) per image, batch 64. It
 * tells whether the machine's cores keep a GPU fed: compare the figure with the training step's
 * images/s.
 *
 * The images are made on the fly in a temp folder (removed at the end) in the ImageFolder layout:
 * `--unique` JPEGs (quality 90) of about 500×375 pixels (each side drawn within ±20%), smooth
 * random colour fields with pixel noise, spread over 8 class folders and repeated as hard links
 * until one epoch covers the warm-up, the timed batches and the batches in flight, so that the
 * pipeline never drains at an epoch's end. After `--warmup` batches (default: one per worker) the
 * next `--batches` are timed.
 *
 * ```sh
 * deno run --allow-read --allow-write --allow-env --allow-ffi --allow-sys \
 *   bench/loader_throughput.ts [--workers N] [--batches 20] [--warmup N] [--batch 64] \
 *   [--unique 512] [--prefetch 2]
 * ```
 *
 * Prints a readable line, then one JSON line: `workers`, `batch`, `batches`, `images_per_s`,
 * `images_per_s_per_worker`, `s_per_batch` (the mean over the timed batches) and `cores` (the
 * machine's logical cores).
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { MultiCropConfig } from "../lib/data/augment.ts";
import { MultiCropLoader } from "../lib/data/loader.ts";
import { makeJpegFolder } from "./jpeg_folder.ts";

/** The official ViT-S/16 recipe's crops. */
const CROPS: MultiCropConfig = {
  globalCropsNumber: 2,
  globalCropSize: 224,
  globalCropsScale: [0.25, 1],
  localCropsNumber: 10,
  localCropSize: 96,
  localCropsScale: [0.05, 0.25],
};

const { values } = parseArgs({
  options: {
    workers: { type: "string", default: String(navigator.hardwareConcurrency) },
    batches: { type: "string", default: "20" },
    warmup: { type: "string" },
    batch: { type: "string", default: "64" },
    unique: { type: "string", default: "512" },
    prefetch: { type: "string", default: "2" },
  },
});

/** The value of `--name` as a positive integer, or one sentence. */
function positive(name: string, text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`--${name} must be a positive integer, got ${text}`);
  }
  return value;
}

const workers = positive("workers", values.workers);
const batches = positive("batches", values.batches);
const warmup = values.warmup === undefined ? workers : positive("warmup", values.warmup);
const batch = positive("batch", values.batch);
const unique = positive("unique", values.unique);
const prefetch = positive("prefetch", values.prefetch);

const root = await Deno.makeTempDir({ prefix: "loader_throughput_" });
try {
  const total = batch * (warmup + batches + workers * prefetch);
  const made = performance.now();
  const bytes = await makeJpegFolder(root, total, unique);
  console.log(
    `made ${Math.min(unique, total)} JPEGs (${
      (bytes / Math.min(unique, total) / 1024).toFixed(0)
    } ` +
      `KiB on average) and ${Math.max(0, total - unique)} links in ` +
      `${((performance.now() - made) / 1000).toFixed(1)} s`,
  );
  const loader = await MultiCropLoader.create({
    source: { kind: "folder", root },
    crops: CROPS,
    batchSize: batch,
    workers,
    prefetchBatches: prefetch,
    seed: 0,
  });
  try {
    const epoch = loader.epoch(0);
    for (let k = 0; k < warmup; k++) await epoch.next();
    const start = performance.now();
    for (let k = 0; k < batches; k++) await epoch.next();
    const seconds = (performance.now() - start) / 1000;
    const imagesPerS = batches * batch / seconds;
    console.log(
      `loader: ${imagesPerS.toFixed(1)} images/s with ${workers} workers ` +
        `(${(imagesPerS / workers).toFixed(1)} per worker), ${batches} batches of ${batch} ` +
        `images × (2 × 224 px + 10 × 96 px crops) after ${warmup} warm-up batches`,
    );
    console.log(JSON.stringify({
      workers,
      batch,
      batches,
      images_per_s: imagesPerS,
      images_per_s_per_worker: imagesPerS / workers,
      s_per_batch: seconds / batches,
      cores: navigator.hardwareConcurrency,
    }));
  } finally {
    loader.close();
  }
} finally {
  await Deno.remove(root, { recursive: true });
}
