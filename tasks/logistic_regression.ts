/**
 * `deno task logistic_regression`: logistic regression on frozen features (official
 * `eval_logistic_regression.py`) of a checkpoint's teacher or student backbone. The features of
 * the train and test images go through the evaluation transform once and are L2-normalised; for
 * each `--lr_lambd` an L2-regularised multinomial logistic regression without intercept is fitted
 * by L-BFGS (see lib/eval/logistic_regression.ts) and scored on the test features.
 *
 *   deno task logistic_regression --pretrained_weights out/pretrain/checkpoint.safetensors
 *     [--lr_lambd 0.01 0.1 1] [--device cuda]
 */

import {
  describeBackbone,
  FROZEN_BACKBONE_OPTIONS,
  nLastBlocksOption,
  openFrozenBackbone,
} from "../lib/eval/frozen_backbone.ts";
import { l2NormalizeRows } from "../lib/eval/feature_bank.ts";
import { extractTrainAndTest } from "../lib/eval/knn_eval.ts";
import { logisticRegressionSweep, OFFICIAL_LAMBDAS } from "../lib/eval/logistic_regression.ts";
import type { OptionTable, OptionValues } from "../lib/cli/options.ts";
import { runTask } from "./run_task.ts";

const OPTIONS = {
  ...FROZEN_BACKBONE_OPTIONS,
  n_last_blocks: nLastBlocksOption(1),
  batch_size_per_gpu: { kind: "int", help: "Images per forward pass.", default: 128, min: 1 },
  lr_lambd: {
    kind: "floats",
    metavar: "lambdas",
    help: "Regularisations λ to sweep: the objective is the mean cross-entropy + λ/2·‖W‖² " +
      "(the official grid; DINO's recipe is 0.1 / the number of train images).",
    default: [...OFFICIAL_LAMBDAS],
  },
  epochs: {
    kind: "int",
    help: "Most passes over the train features per λ (each evaluation of the loss and its " +
      "gradient is one).",
    default: 100,
    min: 1,
  },
  tol: {
    kind: "float",
    help: "Stop a fit when the gradient norm falls below tol × its norm at W = 0.",
    default: 1e-4,
  },
} as const satisfies OptionTable;

async function main(values: OptionValues<typeof OPTIONS>): Promise<number> {
  const lambdas = values.lr_lambd;
  if (lambdas.some((l) => !(l > 0) || !Number.isFinite(l))) {
    throw new Error(`--lr_lambd takes positive numbers, got ${lambdas.join(" ")}`);
  }
  const frozen = await openFrozenBackbone(values, values.n_last_blocks);
  console.log(`Logistic regression of ${describeBackbone(frozen.loaded)} on ${frozen.dataPath}`);
  const start = performance.now();
  const { train, test } = await extractTrainAndTest(frozen.store, frozen.dataPath, {
    ...frozen.features,
    batch: values.batch_size_per_gpu,
    trainSubset: frozen.trainSubset,
    progress: console.log,
  });
  l2NormalizeRows(train.features, train.dim);
  l2NormalizeRows(test.features, test.dim);
  let classes = 0;
  for (const labels of [train.labels, test.labels]) {
    for (const label of labels) classes = Math.max(classes, label + 1);
  }
  console.log(
    `Features are ready: ${train.labels.length} train and ${test.labels.length} test rows of ` +
      `dim ${train.dim}, ${classes} classes. Start the logistic regression.`,
  );
  const { best } = await logisticRegressionSweep(train, test, train.dim, classes, {
    lambdas,
    maxEpochs: values.epochs,
    tolerance: values.tol,
    device: frozen.features.device,
    onLambda: (r) =>
      console.log(
        `Logistic regression result (lambda ${r.lambda}): Top1: ${r.top1.toFixed(2)}, ` +
          `Top5: ${r.top5.toFixed(2)} (objective ${r.objective.toPrecision(6)}, ` +
          `${r.iterations} iterations, ${r.epochs} passes${
            r.converged ? "" : ", stopped before the tolerance"
          })`,
      ),
  });
  const seconds = (performance.now() - start) / 1000;
  console.log(
    `Best: lambda ${best.lambda}, Top1: ${best.top1.toFixed(2)}, Top5: ${best.top5.toFixed(2)} ` +
      `(features and fits took ${seconds.toFixed(1)} s)`,
  );
  return 0;
}

await runTask({
  usage: "deno task logistic_regression --pretrained_weights FILE [options]",
  about: "Logistic regression (official eval_logistic_regression.py) on the frozen backbone's " +
    "L2-normalised features: one L2-regularised fit per λ, scored on the test split.",
  options: OPTIONS,
}, main);
