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
 */

import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import {
  BACKBONE_FILE_HELP,
  describeBackbone,
  FROZEN_BACKBONE_OPTIONS,
  openFrozenBackbone,
  positiveInteger,
} from "../lib/eval/frozen_backbone.ts";
import { DEFAULT_LRS, type LinearProbeOptions, OFFICIAL_LRS } from "../lib/eval/linear.ts";
import { linearProbeAugmented, linearProbeCached } from "../lib/eval/linear_eval.ts";
import { saveSafetensors } from "../lib/checkpoint/safetensors.ts";
import { listOptions, runTask } from "./run_task.ts";

const HELP = `Usage: deno task linear --pretrained_weights FILE [options]

${BACKBONE_FILE_HELP}
  --data_path PATH            dataset with train and test splits (default: the run's --data_path)
  --n_last_blocks N           CLS tokens of the last N blocks (default 4)
  --avgpool_patchtokens N     0: CLS tokens, 1: mean patch token, 2: both (default 0)
  --augment                   train on RandomResizedCrop (scale 0.08-1, bilinear) + flip views of
                              the train images, extracted anew every epoch (the official
                              protocol; slow); default: features extracted once through the
                              evaluation transform (the fast path for small data)
  --epochs N                  training epochs of the classifiers (default 100)
  --batch_size_per_gpu B      classifier mini-batch; every lr is scaled by B / 256 (default 256)
  --lr LR...                  base learning rates to sweep, or "official" for the 45 of
                              eval_linear_multi (default ${DEFAULT_LRS.join(" ")})
  --momentum M                SGD momentum (default 0.9)
  --weight_decay WD           SGD weight decay (default 0)
  --val_freq N                validate every N epochs (default 1)
  --seed S                    seed of the initialisation, the batch order and the crops (default 0)
  --image_size S              crop side, evaluation and --augment (default: the run's global
                              crop size)
  --num_workers N             data-loading workers (default: cores - 1)
  --output_dir DIR            where linear_<key>.safetensors goes (default: beside the checkpoint)`;

function main(): Promise<number> | number {
  const { values, tokens } = parseArgs({
    args: Deno.args,
    options: {
      ...FROZEN_BACKBONE_OPTIONS,
      n_last_blocks: { type: "string", default: "4" },
      epochs: { type: "string", default: "100" },
      batch_size_per_gpu: { type: "string", default: "256" },
      lr: { type: "string", multiple: true },
      momentum: { type: "string", default: "0.9" },
      weight_decay: { type: "string", default: "0" },
      val_freq: { type: "string", default: "1" },
      seed: { type: "string", default: "0" },
      output_dir: { type: "string" },
      augment: { type: "boolean", default: false },
      help: { type: "boolean", short: "h" },
    },
    allowPositionals: true,
    tokens: true,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  return run({ ...values, lr: listOptions(tokens, ["lr"]).lr });
}

function parseLrs(raw: string[] | undefined): readonly number[] {
  if (!raw) return DEFAULT_LRS;
  const parts = raw.flatMap((v) => v.split(/[ ,]+/)).filter((v) => v !== "");
  if (parts.length === 1 && parts[0] === "official") return OFFICIAL_LRS;
  const lrs = parts.map(Number);
  if (lrs.length === 0 || lrs.some((lr) => !(lr > 0) || !Number.isFinite(lr))) {
    throw new Error(`--lr takes positive numbers or "official", got ${raw.join(" ")}`);
  }
  return lrs;
}

async function run(
  values: Record<string, string | string[] | boolean | undefined>,
): Promise<number> {
  const lrs = parseLrs(values.lr as string[] | undefined);
  const batchSize = positiveInteger(values, "batch_size_per_gpu");
  const seed = Number(values.seed);
  if (!Number.isSafeInteger(seed)) throw new Error(`--seed must be an integer, got ${values.seed}`);
  const options: LinearProbeOptions = {
    epochs: positiveInteger(values, "epochs"),
    batchSize,
    lrs,
    momentum: Number(values.momentum),
    weightDecay: Number(values.weight_decay),
    seed,
    valFreq: positiveInteger(values, "val_freq"),
  };
  const weightsPath = String(values.pretrained_weights);
  const frozen = await openFrozenBackbone(values, Number(values.n_last_blocks));
  const { loaded, dataPath, features } = frozen;
  const outputDir = String(values.output_dir ?? dirname(weightsPath));
  const augment = values.augment === true;
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

await runTask(main);
