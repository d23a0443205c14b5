/**
 * `deno task linear_part`: part-wise linear probing (official `analysis/eval_linear_part.sh`,
 * `analysis/linear_part/eval.py`): a linear classifier on the mean of the k patch tokens the CLS
 * token attends to most (`--topk`; the least with `--reverse_top true`), for each k given. The
 * features are extracted once through the evaluation transform (the official script trains on
 * augmented views). Prints each k's best top-1 and draws `linear_part.png` (x: k; y: top-1, 0 to
 * 100 %) in `--output_dir`.
 *
 *   deno task linear_part --pretrained_weights out/pretrain/checkpoint.safetensors
 *     --topk 1 2 4 8 16 --epochs 100
 */

import { join } from "node:path";
import { drawLinePlot } from "../lib/analysis/line_plot.ts";
import { extractPartFeatures, probeParts } from "../lib/analysis/linear_part.ts";
import { savePng } from "../lib/analysis/picture.ts";
import {
  BACKBONE_FILE_OPTIONS,
  dataPathOption,
  DATASET_OPTIONS,
  describeBackbone,
  DEVICE_OPTIONS,
  imageSizeOption,
  openBackboneFile,
} from "../lib/eval/frozen_backbone.ts";
import { DEFAULT_LRS, parseLrs } from "../lib/eval/linear.ts";
import { resolveDataPath } from "../lib/data/source.ts";
import { Progress } from "../lib/runtime/progress.ts";
import type { OptionTable, OptionValues } from "../lib/cli/options.ts";
import { runTask } from "./run_task.ts";

const OPTIONS = {
  ...BACKBONE_FILE_OPTIONS,
  ...DATASET_OPTIONS,
  ...DEVICE_OPTIONS,
  topk: {
    kind: "ints",
    metavar: "K",
    help: "Numbers of most attended patch tokens averaged into the feature; one probe each.",
    default: [4],
    min: 1,
  },
  reverse_top: { kind: "bool", help: "Take the least attended patches.", default: false },
  epochs: { kind: "int", help: "Training epochs of the classifiers.", default: 100, min: 1 },
  batch_size_per_gpu: {
    kind: "int",
    help: "Classifier mini-batch; every lr is scaled by B / 256.",
    default: 128,
    min: 1,
  },
  lr: {
    kind: "strings",
    metavar: "lrs",
    help: `Base learning rates to sweep, or "official" for the 45 of the official sweep ` +
      `(default ${DEFAULT_LRS.join(" ")}).`,
  },
  seed: { kind: "int", help: "Seed of the initialisation and the batch order.", default: 0 },
  num_workers: { kind: "int", help: "Data-loading workers (default: cores − 1).", min: 1 },
  output_dir: {
    kind: "string",
    metavar: "dir",
    help: "Where linear_part.png goes.",
    default: ".linear_part",
  },
} as const satisfies OptionTable;

async function main(values: OptionValues<typeof OPTIONS>): Promise<number> {
  const lrs = parseLrs(values.lr);
  const loaded = await openBackboneFile(values);
  const dataPath = dataPathOption(values.data_path, loaded);
  const size = imageSizeOption(values.image_size, loaded);
  const topks = [...new Set(values.topk)].sort((a, b) => a - b);
  const which = values.reverse_top ? "least" : "most";
  console.log(
    `part-wise linear probing of ${describeBackbone(loaded)} on ${dataPath}: the mean of the ` +
      `${topks.join(", ")} ${which} attended patch tokens`,
  );
  const features = async (split: "train" | "test") => {
    const progress = new Progress({ label: `${split} part features` });
    const result = await extractPartFeatures(loaded, await resolveDataPath(dataPath, split), {
      topks,
      reverse: values.reverse_top,
      size,
      workers: values.num_workers,
      device: values.device,
      onBatch: (done, total) => progress.update(done, total),
    });
    progress.finish();
    return result;
  };
  const train = await features("train");
  const test = await features("test");
  const results = await probeParts(train, test, {
    epochs: values.epochs,
    batchSize: values.batch_size_per_gpu,
    lrs,
    seed: values.seed,
  });
  for (const { k, best } of results) {
    console.log(
      `top ${String(k).padStart(3)} patches: Top1 ${best.top1.toFixed(2)}, Top5 ` +
        `${best.top5.toFixed(2)} (lr ${best.lr}, epoch ${best.bestEpoch})`,
    );
  }
  await Deno.mkdir(values.output_dir, { recursive: true });
  const out = join(values.output_dir, "linear_part.png");
  await savePng(out, drawLinePlot([{ points: results.map((r) => [r.k, r.best.top1]) }]));
  console.log(`drew the curve in ${out}`);
  return 0;
}

await runTask({
  usage: "deno task linear_part --pretrained_weights FILE [--topk K...] [options]",
  about: "Linear probing on the mean of the most attended patch tokens (official " +
    "linear_part/eval.py).",
  options: OPTIONS,
}, main);
