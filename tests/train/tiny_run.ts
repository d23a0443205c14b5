/**
 * A tiny pre-training run of the trainer tests: its data folder and its model arguments.
 *
 * @module
 */

import { join } from "node:path";
import { writeVendoredSubset } from "../data/fixtures.ts";

/**
 * Creates the folder `dir` with the first `count` vendored Fashion-MNIST training images and
 * labels (and the first `testCount` test ones, when given) as the IDX files `--data_path` reads.
 */
export async function writeTinyDataPath(
  dir: string,
  count: number,
  testCount = 0,
): Promise<void> {
  await Deno.mkdir(dir);
  for (const [split, n] of [["train", count], ["t10k", testCount]] as const) {
    if (n === 0) continue;
    await writeVendoredSubset(
      split,
      n,
      join(dir, `${split}-images-idx3-ubyte`),
      join(dir, `${split}-labels-idx1-ubyte`),
    );
  }
}

/**
 * The model arguments of a tiny run: vit_mini with patch 4 on 16 px images, 16 px global crops
 * and one 8 px local crop, `batch` images per iteration, heads of out_dim 32 (hidden 32,
 * bottleneck 16).
 */
export function tinyModelArgv(batch: number): string[] {
  return [
    ...["--arch", "vit_mini", "--patch_size", "4", "--img_size", "16"],
    ...["--global_crop_size", "16", "--local_crop_size", "8", "--local_crops_number", "1"],
    ...["--batch_size_per_gpu", String(batch), "--out_dim", "32", "--patch_out_dim", "32"],
    ...["--head_hidden_dim", "32", "--head_bottleneck_dim", "16"],
  ];
}
