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
import { evalBatches, randomCropBatches } from "../lib/data/loader.ts";
import { resolveDataPath } from "../lib/data/source.ts";
import {
  type ExtractedFeatures,
  extractTrainAndTest,
  FeatureExtractor,
} from "../lib/eval/knn_eval.ts";
import {
  BACKBONE_FILE_HELP,
  describeBackbone,
  FROZEN_BACKBONE_OPTIONS,
  type FrozenBackbone,
  openFrozenBackbone,
  positiveInteger,
} from "../lib/eval/frozen_backbone.ts";
import {
  DEFAULT_LRS,
  type LinearProbeOptions,
  type LinearProbeReport,
  OFFICIAL_LRS,
  trainLinearProbes,
  trainLinearProbesPerEpoch,
} from "../lib/eval/linear.ts";
import { saveSafetensors } from "../lib/runtime/safetensors.ts";
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

/** Number of classes: one more than the largest label of either split. */
function classCount(...splits: ExtractedFeatures[]): number {
  let max = 0;
  for (const { labels } of splits) for (const label of labels) if (label > max) max = label;
  return max + 1;
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
    ? await probeAugmented(frozen, options)
    : await probeCached(frozen, options);
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

interface Probe {
  readonly report: LinearProbeReport;
  readonly dim: number;
  readonly classes: number;
}

/** The fast path: train and test features extracted once, every epoch on the same features. */
async function probeCached(frozen: FrozenBackbone, options: LinearProbeOptions): Promise<Probe> {
  const { train, test } = await extractTrainAndTest(frozen.store, frozen.dataPath, frozen.features);
  const classes = classCount(train, test);
  console.log(
    `Features: ${train.labels.length} train and ${test.labels.length} test rows of dim ` +
      `${train.dim}, ${classes} classes; sweeping ${options.lrs?.length} learning rates`,
  );
  const report = trainLinearProbes(train, test, train.dim, classes, options);
  return { report, dim: train.dim, classes };
}

/** The official path: test features once, train features of fresh random crops every epoch. */
async function probeAugmented(frozen: FrozenBackbone, options: LinearProbeOptions): Promise<Probe> {
  const { size, workers } = frozen.features;
  const trainSpec = await resolveDataPath(frozen.dataPath, "train");
  const testSpec = await resolveDataPath(frozen.dataPath, "test");
  const extractor = await FeatureExtractor.create(frozen.store, frozen.features);
  try {
    const batchSize = extractor.batch;
    const test = await extractor.extract(evalBatches(testSpec, size, batchSize, workers));
    const epochs = options.epochs ?? 100;
    const augmented = async (epoch: number): Promise<ExtractedFeatures> => {
      const start = performance.now();
      const seed = options.seed ?? 0;
      const train = await extractor.extract(
        randomCropBatches(trainSpec, { size, batchSize, seed, epoch, workers }),
      );
      const seconds = ((performance.now() - start) / 1000).toFixed(1);
      console.log(
        `Epoch ${epoch + 1}/${epochs}: features of the augmented train images in ${seconds} s`,
      );
      return train;
    };
    // The first epoch's features give the train labels, hence the class count.
    const first = await augmented(0);
    const classes = classCount(first, test);
    console.log(
      `Features: ${first.labels.length} train (augmented anew each epoch) and ` +
        `${test.labels.length} test rows of dim ${extractor.dim}, ${classes} classes; sweeping ` +
        `${options.lrs?.length} learning rates`,
    );
    const report = await trainLinearProbesPerEpoch(
      (epoch) => epoch === 0 ? Promise.resolve(first) : augmented(epoch),
      test,
      extractor.dim,
      classes,
      {
        ...options,
        onEpoch: (epoch, results) => {
          const best = results.reduce((a, b) => b.top1 > a.top1 ? b : a);
          console.log(`Epoch ${epoch}: best Top1 so far ${best.top1.toFixed(2)} (lr ${best.lr})`);
        },
      },
    );
    return { report, dim: extractor.dim, classes };
  } finally {
    await extractor.close();
  }
}

await runTask(main);
