/**
 * Shared fixtures of the data tests (and the data-pipeline bench): the vendored Fashion-MNIST
 * subset, the small multi-crop configuration, temp folders and IDX subsets.
 *
 * @module
 */

import { join } from "node:path";
import type { MultiCropConfig } from "../../lib/data/augment.ts";
import { readIdx, writeIdx } from "../../lib/data/idx.ts";

/** The vendored Fashion-MNIST subset (10 000 train and 2 000 test images, gzipped IDX). */
export const VENDORED = new URL("../../data/fashion-mnist", import.meta.url).pathname;

/** 2 global crops of 32 px (scale 0.14–1) and 4 local crops of 16 px (scale 0.05–0.4). */
export const SMALL_CROPS: Readonly<MultiCropConfig> = {
  globalCropsNumber: 2,
  globalCropSize: 32,
  globalCropsScale: [0.14, 1],
  localCropsNumber: 4,
  localCropSize: 16,
  localCropsScale: [0.05, 0.4],
};

/** Runs `body` on a fresh temp folder and removes the folder afterwards, whatever happens. */
export async function withTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Writes the first `count` images and labels of the vendored `split` ("train" or "t10k") as plain
 * IDX files at `images` and `labels`; returns them as an IDX source spec.
 */
export async function writeVendoredSubset(
  split: "train" | "t10k",
  count: number,
  images: string,
  labels: string,
): Promise<{ kind: "idx"; images: string; labels: string }> {
  const allImages = await readIdx(join(VENDORED, `${split}-images-idx3-ubyte.gz`));
  const allLabels = await readIdx(join(VENDORED, `${split}-labels-idx1-ubyte.gz`));
  const [, height, width] = allImages.dims;
  await writeIdx(images, {
    dims: [count, height, width],
    data: allImages.data.slice(0, count * height * width),
  });
  await writeIdx(labels, { dims: [count], data: allLabels.data.slice(0, count) });
  return { kind: "idx", images, labels };
}

/**
 * Creates the folder `dir` holding the first `train` train and `test` test images of the vendored
 * subset as plain IDX files under the Fashion-MNIST names (a dataset `--data_path` reads);
 * returns `dir`.
 */
export async function writeVendoredFolder(
  dir: string,
  train: number,
  test: number,
): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  for (const [split, count] of [["train", train], ["t10k", test]] as const) {
    await writeVendoredSubset(
      split,
      count,
      join(dir, `${split}-images-idx3-ubyte`),
      join(dir, `${split}-labels-idx1-ubyte`),
    );
  }
  return dir;
}
