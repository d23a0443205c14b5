/**
 * `deno task correspondence`: sparse patch correspondences (official
 * `analysis/correspondence/visualize_correspondence.py`) between two augmented views of one image
 * (instance mode, with the match accuracy against the crop boxes) or two images of one class
 * (class mode), drawn as red lines between the views side by side.
 *
 *   deno task correspondence --pretrained_weights out/pretrain/checkpoint.safetensors \
 *     --sample_type instance
 */

import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import {
  classBatches,
  correspondBatch,
  drawCorrespondences,
  instanceBatches,
} from "../lib/analysis/correspondence.ts";
import { BackboneRunner } from "../lib/analysis/backbone_runner.ts";
import { savePng } from "../lib/analysis/picture.ts";
import { openSource, resolveDataPath, type Split } from "../lib/data/source.ts";
import {
  BACKBONE_FILE_HELP,
  BACKBONE_FILE_OPTIONS,
  choiceOption,
  dataPathOption,
  describeBackbone,
  imageSizeOption,
  openBackboneFile,
  positiveInteger,
} from "../lib/eval/frozen_backbone.ts";
import { Rng } from "../lib/runtime/rng.ts";
import { runTask } from "./run_task.ts";

const HELP = `Usage: deno task correspondence --pretrained_weights FILE [options]

${BACKBONE_FILE_HELP}
  --data_path PATH            dataset (default: the run's --data_path)
  --split NAME                test (default) or train
  --sample_type TYPE          class (default): pairs of images of one class; instance: two
                              augmented views of one image, with the match accuracy
  --image_size S              side of each view in pixels (default: the run's global crop size)
  --batch_size B              images per batch; in class mode, images of one class (default 2)
  --topk K                    matches drawn per picture (default 12)
  --eval_radius R             instance mode: a match within R grid cells of the truth counts as
                              correct (default 0)
  --show_nums N               pictures to write (default 100)
  --num_pairs N               pairs to evaluate; pictures show the first (default: --show_nums)
  --output_path DIR           where the pictures go (default correspondence)
  --seed N                    random seed of the order and the augmentations (default 1)

Writes {output_path}/{sample_type}_corresp{n}_cls{label}.png: view 1 and view 2 side by side,
lines from the view-1 patches the model's CLS token attends to most to their best matches.`;

function main(): Promise<number> | number {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      ...BACKBONE_FILE_OPTIONS,
      data_path: { type: "string" },
      split: { type: "string", default: "test" },
      sample_type: { type: "string", default: "class" },
      image_size: { type: "string" },
      batch_size: { type: "string", default: "2" },
      topk: { type: "string", default: "12" },
      eval_radius: { type: "string", default: "0" },
      show_nums: { type: "string", default: "100" },
      num_pairs: { type: "string" },
      output_path: { type: "string", default: "correspondence" },
      seed: { type: "string", default: "1" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  return run(values);
}

async function run(values: Record<string, string | boolean | undefined>): Promise<number> {
  const sampleType = choiceOption(values, "sample_type", ["instance", "class"]);
  const split = choiceOption(values, "split", ["test", "train"]);
  const batchSize = positiveInteger(values, "batch_size");
  const topk = positiveInteger(values, "topk");
  const showNums = positiveInteger(values, "show_nums");
  const numPairs = values.num_pairs === undefined ? showNums : positiveInteger(values, "num_pairs");
  const radius = Number(values.eval_radius);
  if (!(Number.isInteger(radius) && radius >= 0)) {
    throw new Error(`--eval_radius must be a non-negative integer, got ${values.eval_radius}`);
  }
  const seed = Number(values.seed);
  if (!Number.isSafeInteger(seed)) throw new Error(`--seed must be an integer, got ${values.seed}`);

  const loaded = await openBackboneFile(values);
  const { patchSize } = loaded.config;
  const size = imageSizeOption(values, loaded);
  const grid = size / patchSize;
  if (topk > grid * grid) {
    throw new Error(`--topk ${topk} exceeds the ${grid * grid} patches of a ${size}-pixel view`);
  }
  const dataPath = dataPathOption(values, loaded);
  const source = await openSource(await resolveDataPath(dataPath, split as Split));
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
  const output = String(values.output_path);
  await mkdir(output, { recursive: true });
  console.log(
    `${sampleType} correspondences of ${describeBackbone(loaded)} on ${dataPath} (${split}), ` +
      `${size}-pixel views, ${grid}×${grid} patches`,
  );

  const runner = BackboneRunner.create(loaded);
  const options = { sampleType, size, topk, radius, rng } as const;
  const accuracies: number[] = [];
  let pairs = 0;
  let pictures = 0;
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
        );
        const label = source.label(batch[b]);
        await savePng(join(output, `${sampleType}_corresp${pictures}_cls${label}.png`), picture);
        pictures++;
      }
      if (result.count && result.count.overlapping > 0) {
        accuracies.push(result.count.correct / result.count.overlapping);
      }
      const before = pairs;
      pairs += batch.length;
      if (Math.floor(10 * pairs / numPairs) > Math.floor(10 * before / numPairs)) {
        console.log(`${Math.min(pairs, numPairs)}/${numPairs} pairs, ${pictures} pictures`);
      }
    }
  } finally {
    await runner.close();
  }
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

await runTask(main);
