/**
 * `deno task linear`: linear probing (official `eval_linear_multi.py`, §6.2) of a checkpoint's
 * teacher or student backbone. By default the fast path for small data: the features of the train
 * and test images are extracted once through the evaluation transform and every epoch trains on
 * them. With `--augment`, the official protocol: every epoch the train images go through
 * RandomResizedCrop + flip (seeded) and the frozen backbone again, and each classifier of the sweep
 * takes one epoch of SGD on those features; the test features are extracted once.
 *
 *   deno task linear --pretrained_weights out/pretrain/checkpoint.safetensors [--lr 0.01 0.1]
 *   deno task linear --pretrained_weights out/pretrain/checkpoint.safetensors --augment --epochs 10
 *     --device cuda
 */

import { dirname, join } from "node:path";
import {
  describeBackbone,
  FROZEN_BACKBONE_OPTIONS,
  nLastBlocksOption,
  openFrozenBackbone,
} from "../lib/eval/frozen_backbone.ts";
import { DEFAULT_LRS, type LinearProbeOptions, parseLrs } from "../lib/eval/linear.ts";
import { linearProbeAugmented, linearProbeCached } from "../lib/eval/linear_eval.ts";
import { saveSafetensors } from "../lib/checkpoint/safetensors.ts";
import { type OptionTable, type OptionValues, required } from "../lib/cli/options.ts";
import { runTask } from "./run_task.ts";

const OPTIONS = {
  ...FROZEN_BACKBONE_OPTIONS,
  n_last_blocks: nLastBlocksOption(4),
  augment: {
    kind: "flag",
    help: "Train on RandomResizedCrop (scale 0.08-1, bilinear) + flip views of the train " +
      "images, extracted anew every epoch (the official protocol; slow). Without it the " +
      "features are extracted once through the evaluation transform (the fast path for small " +
      "data).",
  },
  epochs: { kind: "int", help: "Training epochs of the classifiers.", default: 100, min: 1 },
  batch_size_per_gpu: {
    kind: "int",
    help: "Classifier mini-batch; every lr is scaled by B / 256.",
    default: 256,
    min: 1,
  },
  lr: {
    kind: "strings",
    metavar: "lrs",
    help: `Base learning rates to sweep, or "official" for the 45 of eval_linear_multi ` +
      `(default ${DEFAULT_LRS.join(" ")}).`,
  },
  momentum: { kind: "float", help: "SGD momentum.", default: 0.9 },
  weight_decay: { kind: "float", help: "SGD weight decay.", default: 0 },
  val_freq: { kind: "int", help: "Validate every N epochs.", default: 1, min: 1 },
  seed: {
    kind: "int",
    help: "Seed of the initialisation, the batch order and the crops.",
    default: 0,
  },
  output_dir: {
    kind: "string",
    metavar: "dir",
    help: "Where linear_<key>.safetensors goes (default: beside the checkpoint).",
  },
} as const satisfies OptionTable;

async function main(values: OptionValues<typeof OPTIONS>): Promise<number> {
  const batchSize = values.batch_size_per_gpu;
  const options: LinearProbeOptions = {
    epochs: values.epochs,
    batchSize,
    lrs: parseLrs(values.lr),
    momentum: values.momentum,
    weightDecay: values.weight_decay,
    seed: values.seed,
    valFreq: values.val_freq,
  };
  const weightsPath = required(values.pretrained_weights, "pretrained_weights");
  const frozen = await openFrozenBackbone(values, values.n_last_blocks);
  const { loaded, dataPath, features } = frozen;
  const outputDir = values.output_dir ?? dirname(weightsPath);
  const augment = values.augment;
  console.log(
    `Linear probing of ${describeBackbone(loaded)} on ${dataPath}` +
      (augment ? " with RandomResizedCrop + flip" : ""),
  );
  const start = performance.now();
  const { report, dim, classes } = augment
    ? await linearProbeAugmented(frozen, options, console.log)
    : await linearProbeCached(frozen, options, console.log);
  const seconds = (performance.now() - start) / 1000;
  for (const r of report.results) {
    console.log(
      `lr ${r.lr} (scaled ${r.lr * batchSize / 256}): Top1: ${r.top1.toFixed(2)}, ` +
        `Top5: ${r.top5.toFixed(2)} (epoch ${r.bestEpoch})`,
    );
  }
  const { best } = report;
  console.log(
    `Best linear classifier: lr ${best.lr}, Top1: ${best.top1.toFixed(2)}, ` +
      `Top5: ${best.top5.toFixed(2)} (epoch ${best.bestEpoch}; features and training took ` +
      `${seconds.toFixed(1)} s)`,
  );
  await Deno.mkdir(outputDir, { recursive: true });
  const out = join(outputDir, `linear_${loaded.key}.safetensors`);
  await saveSafetensors(out, {
    "linear.weight": {
      dtype: "float32",
      shape: [classes, dim],
      data: report.bestClassifier.weight,
    },
    "linear.bias": { dtype: "float32", shape: [classes], data: report.bestClassifier.bias },
  }, {
    format: "ibot-deno-linear-1",
    checkpoint_key: loaded.key,
    pretrained_weights: weightsPath,
    n_last_blocks: String(features.nLastBlocks),
    avgpool_patchtokens: String(features.avgpool),
    augment: String(augment),
    lr: String(best.lr),
    epoch: String(best.bestEpoch),
    top1: String(best.top1),
    top5: String(best.top5),
  });
  console.log(`Saved ${out}`);
  return 0;
}

await runTask({
  usage: "deno task linear --pretrained_weights FILE [options]",
  about: "Linear probing (official eval_linear_multi.py) of the frozen backbone: a sweep of " +
    "linear classifiers, trained with SGD; the best is saved.",
  options: OPTIONS,
}, main);
