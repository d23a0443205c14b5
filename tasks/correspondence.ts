/**
 * `deno task correspondence`: sparse patch correspondences (official
 * `analysis/correspondence/visualize_correspondence.py`) between two augmented views of one image
 * (instance mode, with the match accuracy against the crop boxes) or two images of one class
 * (class mode), drawn as red lines between the views side by side. A Swin's patches are its
 * last-stage tokens, 32 pixels a side.
 *
 *   deno task correspondence --pretrained_weights out/pretrain/checkpoint.safetensors \
 *     --sample_type instance
 */

import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import {
  classBatches,
  correspondBatch,
  drawCorrespondences,
  instanceBatches,
} from "../lib/analysis/correspondence.ts";
import { BackboneRunner, checkTokenMultiple } from "../lib/analysis/backbone_runner.ts";
import { readableScale, savePng } from "../lib/analysis/picture.ts";
import { patchGrid } from "../lib/models/backbone.ts";
import { openSource, resolveDataPath } from "../lib/data/source.ts";
import {
  BACKBONE_FILE_OPTIONS,
  dataPathOption,
  DATASET_OPTIONS,
  describeBackbone,
  DEVICE_OPTIONS,
  imageSizeOption,
  openBackboneFile,
} from "../lib/eval/frozen_backbone.ts";
import { Progress } from "../lib/runtime/progress.ts";
import { Rng } from "../lib/runtime/rng.ts";
import type { OptionTable, OptionValues } from "../lib/cli/options.ts";
import { runTask } from "./run_task.ts";

const OPTIONS = {
  ...BACKBONE_FILE_OPTIONS,
  ...DEVICE_OPTIONS,
  data_path: { ...DATASET_OPTIONS.data_path, help: "Dataset (default: the run's --data_path)." },
  split: { kind: "string", help: "Which split.", choices: ["test", "train"], default: "test" },
  sample_type: {
    kind: "string",
    help: "class: pairs of images of one class; instance: two augmented views of one image, " +
      "with the match accuracy.",
    choices: ["instance", "class"],
    default: "class",
  },
  image_size: { ...DATASET_OPTIONS.image_size, help: "Side of each view in pixels." },
  batch_size: {
    kind: "int",
    help: "Images per batch; in class mode, images of one class.",
    default: 2,
    min: 1,
  },
  topk: { kind: "int", help: "Matches drawn per picture.", default: 12, min: 1 },
  eval_radius: {
    kind: "int",
    help: "Instance mode: a match within R grid cells of the truth counts as correct.",
    default: 0,
    min: 0,
  },
  show_nums: { kind: "int", help: "Pictures to write.", default: 100, min: 1 },
  num_pairs: {
    kind: "int",
    help: "Pairs to evaluate; pictures show the first (default: --show_nums).",
    min: 1,
  },
  output_path: {
    kind: "string",
    metavar: "dir",
    help: "Where the pictures go.",
    default: "correspondence",
  },
  seed: { kind: "int", help: "Random seed of the order and the augmentations.", default: 1 },
  panel_size: {
    kind: "int",
    metavar: "px",
    help: "Enlarge each view by the smallest whole factor (nearest neighbour) that makes it at " +
      "least PX pixels wide, before drawing the lines (1 keeps the views' size).",
    default: 224,
    min: 1,
  },
} as const satisfies OptionTable;

async function main(values: OptionValues<typeof OPTIONS>): Promise<number> {
  const {
    sample_type: sampleType,
    split,
    batch_size: batchSize,
    topk,
    show_nums: showNums,
    panel_size: panelSize,
    eval_radius: radius,
    seed,
  } = values;
  const numPairs = values.num_pairs ?? showNums;

  const loaded = await openBackboneFile(values);
  const size = imageSizeOption(values.image_size, loaded);
  checkTokenMultiple(size, loaded.config);
  const patchSize = patchGrid(loaded.config);
  const grid = size / patchSize;
  if (topk > grid * grid) {
    throw new Error(`--topk ${topk} exceeds the ${grid * grid} patches of a ${size}-pixel view`);
  }
  const dataPath = dataPathOption(values.data_path, loaded);
  const source = await openSource(await resolveDataPath(dataPath, split));
  const rng = new Rng(seed);
  const batches = sampleType === "instance"
    ? instanceBatches(source.length, batchSize, rng)
    : classBatches(
      Array.from({ length: source.length }, (_, i) => source.label(i)),
      batchSize,
      rng,
    );
  if (batches.length === 0) {
    throw new Error(`${dataPath} has no class with ${batchSize} images (--batch_size)`);
  }
  const output = values.output_path;
  await mkdir(output, { recursive: true });
  console.log(
    `${sampleType} correspondences of ${describeBackbone(loaded)} on ${dataPath} (${split}), ` +
      `${size}-pixel views, ${grid}×${grid} patches, pictures enlarged ` +
      `${readableScale(size, size, panelSize)}×`,
  );

  const runner = BackboneRunner.create(loaded, { device: values.device });
  const options = { sampleType, size, topk, radius, rng } as const;
  const accuracies: number[] = [];
  let pairs = 0;
  let pictures = 0;
  const progress = new Progress({ label: "correspondences", unit: "pairs", write: console.log });
  try {
    for (const batch of batches) {
      if (pairs >= numPairs) break;
      const images = await Promise.all(batch.map((i) => source.load(i)));
      const result = await correspondBatch(runner, images, options);
      for (const [b, pair] of result.pairs.entries()) {
        if (pictures >= showNums) break;
        const picture = drawCorrespondences(
          { data: result.views1[b], width: size, height: size },
          { data: result.views2[b], width: size, height: size },
          pair.chosen,
          pair.chosen.map((p) => pair.matches.index[p]),
          grid,
          patchSize,
          { panelSize },
        );
        const label = source.label(batch[b]);
        await savePng(join(output, `${sampleType}_corresp${pictures}_cls${label}.png`), picture);
        pictures++;
      }
      if (result.count && result.count.overlapping > 0) {
        accuracies.push(result.count.correct / result.count.overlapping);
      }
      pairs += batch.length;
      progress.update(Math.min(pairs, numPairs), numPairs);
    }
  } finally {
    await runner.close();
  }
  progress.finish();
  console.log(`wrote ${pictures} pictures to ${output}`);
  if (sampleType === "instance") {
    const mean = accuracies.reduce((a, b) => a + b, 0) / Math.max(1, accuracies.length);
    console.log(
      `mean match accuracy (eval_radius ${radius}) over ${pairs} pairs in ` +
        `${accuracies.length} batches: ${(100 * mean).toFixed(2)}%`,
    );
  }
  return 0;
}

await runTask({
  usage: "deno task correspondence --pretrained_weights FILE [options]",
  about: "Sparse patch correspondences (official visualize_correspondence.py) between two " +
    "augmented views of one image (instance) or two images of one class (class).",
  options: OPTIONS,
  epilogue:
    `Writes {output_path}/{sample_type}_corresp{n}_cls{label}.png: view 1 and view 2 side by side,
lines from the view-1 patches the model's CLS token attends to most (a Swin: the last-stage tokens
most similar to their average) to their best matches.`,
}, main);
