/**
 * `deno task linear`: linear probing (official `eval_linear_multi.py`, §6.2) of a checkpoint's
 * teacher or student backbone, on features extracted once through the evaluation transform (the
 * fast path for small data: no RandomResizedCrop/flip augmentation of the training images).
 *
 *   deno task linear --pretrained_weights out/pretrain/checkpoint.safetensors [--lr 0.01 0.1]
 */

import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { resolveDataPath } from "../lib/data/source.ts";
import { extractFeatures, type FeatureOptions } from "../lib/eval/knn_eval.ts";
import { DEFAULT_LRS, OFFICIAL_LRS, trainLinearProbes } from "../lib/eval/linear.ts";
import { saveSafetensors } from "../lib/runtime/safetensors.ts";
import { loadTrainingCheckpoint } from "../lib/train/checkpoint.ts";
import { backboneFromArgs } from "../lib/train/config.ts";

const HELP = `Usage: deno task linear --pretrained_weights FILE [options]

  --pretrained_weights FILE   training checkpoint (.safetensors) written by deno task pretrain
  --checkpoint_key KEY        teacher (default) or student
  --data_path PATH            dataset with train and test splits (default: the run's --data_path)
  --n_last_blocks N           CLS tokens of the last N blocks (default 4)
  --avgpool_patchtokens N     0: CLS tokens, 1: mean patch token, 2: both (default 0)
  --epochs N                  training epochs of the classifiers (default 100)
  --batch_size_per_gpu B      classifier mini-batch; every lr is scaled by B / 256 (default 256)
  --lr LR...                  base learning rates to sweep, or "official" for the 45 of
                              eval_linear_multi (default ${DEFAULT_LRS.join(" ")})
  --momentum M                SGD momentum (default 0.9)
  --weight_decay WD           SGD weight decay (default 0)
  --val_freq N                validate every N epochs (default 1)
  --seed S                    seed of the initialisation and the batch order (default 0)
  --image_size S              evaluation crop side (default: the run's global crop size)
  --num_workers N             data-loading workers (default: cores - 1)
  --output_dir DIR            where linear_<key>.safetensors goes (default: beside the checkpoint)`;

function main(): Promise<number> | number {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      pretrained_weights: { type: "string" },
      checkpoint_key: { type: "string", default: "teacher" },
      data_path: { type: "string" },
      n_last_blocks: { type: "string", default: "4" },
      avgpool_patchtokens: { type: "string", default: "0" },
      epochs: { type: "string", default: "100" },
      batch_size_per_gpu: { type: "string", default: "256" },
      lr: { type: "string", multiple: true },
      momentum: { type: "string", default: "0.9" },
      weight_decay: { type: "string", default: "0" },
      val_freq: { type: "string", default: "1" },
      seed: { type: "string", default: "0" },
      image_size: { type: "string" },
      num_workers: { type: "string" },
      output_dir: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    allowPositionals: true,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (!values.pretrained_weights) throw new Error("--pretrained_weights is required (see --help)");
  return run(values);
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
  const key = String(values.checkpoint_key);
  if (key !== "teacher" && key !== "student") {
    throw new Error(`--checkpoint_key must be teacher or student, got ${key}`);
  }
  const avgpool = Number(values.avgpool_patchtokens);
  if (![0, 1, 2].includes(avgpool)) throw new Error("--avgpool_patchtokens must be 0, 1 or 2");
  const lrs = parseLrs(values.lr as string[] | undefined);
  const weightsPath = String(values.pretrained_weights);
  const checkpoint = await loadTrainingCheckpoint(weightsPath);
  const dataPath = String(values.data_path ?? checkpoint.args.data_path);
  const outputDir = String(values.output_dir ?? dirname(weightsPath));
  const nLastBlocks = Number(values.n_last_blocks);
  console.log(
    `Linear probing of the ${key} of ${weightsPath} (epoch ${checkpoint.epoch}) on ${dataPath}`,
  );
  const features: FeatureOptions = {
    backbone: backboneFromArgs(checkpoint.args),
    prefix: key,
    size: Number(values.image_size ?? checkpoint.args.global_crop_size),
    avgpool: avgpool as 0 | 1 | 2,
    nLastBlocks,
    workers: values.num_workers ? Number(values.num_workers) : undefined,
  };
  const train = await extractFeatures(
    checkpoint.store,
    await resolveDataPath(dataPath, "train"),
    features,
  );
  const test = await extractFeatures(
    checkpoint.store,
    await resolveDataPath(dataPath, "test"),
    features,
  );
  const classes = Math.max(...train.labels, ...test.labels) + 1;
  console.log(
    `Features: ${train.labels.length} train and ${test.labels.length} test rows of dim ` +
      `${train.dim}, ${classes} classes; sweeping ${lrs.length} learning rates`,
  );
  const batchSize = Number(values.batch_size_per_gpu);
  const start = performance.now();
  const report = trainLinearProbes(train, test, train.dim, classes, {
    epochs: Number(values.epochs),
    batchSize,
    lrs,
    momentum: Number(values.momentum),
    weightDecay: Number(values.weight_decay),
    seed: Number(values.seed),
    valFreq: Number(values.val_freq),
  });
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
      `Top5: ${best.top5.toFixed(2)} (epoch ${best.bestEpoch}; trained in ${seconds.toFixed(1)} s)`,
  );
  await Deno.mkdir(outputDir, { recursive: true });
  const out = join(outputDir, `linear_${key}.safetensors`);
  await saveSafetensors(out, {
    "linear.weight": {
      dtype: "float32",
      shape: [classes, train.dim],
      data: report.bestClassifier.weight,
    },
    "linear.bias": { dtype: "float32", shape: [classes], data: report.bestClassifier.bias },
  }, {
    format: "ibot-deno-linear-1",
    checkpoint_key: key,
    pretrained_weights: weightsPath,
    n_last_blocks: String(nLastBlocks),
    avgpool_patchtokens: String(avgpool),
    lr: String(best.lr),
    epoch: String(best.bestEpoch),
    top1: String(best.top1),
    top5: String(best.top5),
  });
  console.log(`Saved ${out}`);
  return 0;
}

try {
  Deno.exit(await main());
} catch (error) {
  console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
  Deno.exit(1);
}
