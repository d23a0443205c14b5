import { assert, assertCloseToScale } from "../assert.ts";
import { runDenoTask } from "../task_runner.ts";
import { tinyVitCheckpoint } from "./tiny_vit_checkpoint.ts";
import { f32, f64, float64Reader, runTorchReference, torchAvailable } from "../reference/torch.ts";
import { l2NormalizeRows } from "../../lib/eval/feature_bank.ts";
import { type LabelledFeatures, linearPredict } from "../../lib/eval/linear.ts";
import {
  fitLogisticRegression,
  logisticRegressionSweep,
  OFFICIAL_LAMBDAS,
} from "../../lib/eval/logistic_regression.ts";
import { Rng } from "../../lib/runtime/rng.ts";

/** L2-normalised Gaussian blobs: `n` train and n/2 test rows, labels i mod classes. */
function blobs(seed: number, n: number, dim: number, classes: number, noise: number) {
  const rng = new Rng(seed);
  const centres = Float64Array.from({ length: classes * dim }, () => rng.normal());
  const make = (rows: number): LabelledFeatures => {
    const features = new Float32Array(rows * dim);
    const labels = Int32Array.from({ length: rows }, (_, i) => i % classes);
    features.forEach((_, j, a) => {
      const i = Math.floor(j / dim);
      a[j] = centres[labels[i] * dim + (j % dim)] + noise * rng.normal();
    });
    l2NormalizeRows(features, dim);
    return { features, labels };
  };
  return { train: make(n), test: make(Math.ceil(n / 2)) };
}

/** F(W) and ∇F(W) in float64, written out plainly: mean cross-entropy + λ/2·‖W‖². */
function hostObjective(
  data: LabelledFeatures,
  weight: ArrayLike<number>,
  dim: number,
  classes: number,
  lambda: number,
) {
  const n = data.labels.length;
  const gradient = Array.from(weight, (w) => lambda * w);
  let value = 0.5 * lambda * Array.from(weight).reduce((s, w) => s + w * w, 0);
  for (let i = 0; i < n; i++) {
    const x = data.features.subarray(i * dim, (i + 1) * dim);
    const z = Array.from({ length: classes }, (_, c) => {
      let s = 0;
      for (let d = 0; d < dim; d++) s += weight[c * dim + d] * x[d];
      return s;
    });
    const max = Math.max(...z);
    const e = z.map((v) => Math.exp(v - max));
    const total = e.reduce((a, b) => a + b, 0);
    value += (Math.log(total) + max - z[data.labels[i]]) / n;
    for (let c = 0; c < classes; c++) {
      const p = e[c] / total - (c === data.labels[i] ? 1 : 0);
      for (let d = 0; d < dim; d++) gradient[c * dim + d] += p * x[d] / n;
    }
  }
  return { value, gradientNorm: Math.hypot(...gradient) };
}

Deno.test("fitLogisticRegression: the solution is a stationary point of the objective", async () => {
  // 150 rows in chunks of 64 (a padded last chunk).
  const { train } = blobs(1, 150, 8, 4, 0.8);
  for (const lambda of [0.01, 0.1]) {
    const fit = await fitLogisticRegression(train, 8, 4, lambda, {
      tolerance: 1e-5,
      maxEpochs: 300,
      chunk: 64,
    });
    assert(fit.converged, `λ ${lambda}: ${fit.epochs} passes, ‖∇F‖ ${fit.gradientNorm}`);
    const atZero = hostObjective(train, new Float64Array(32), 8, 4, lambda);
    const atFit = hostObjective(train, fit.weight, 8, 4, lambda);
    assertCloseToScale(fit.objective, atFit.value, `objective (λ ${lambda})`, 1e-6);
    assert(atFit.value < atZero.value, `F falls from ${atZero.value} to ${atFit.value}`);
    assert(
      atFit.gradientNorm < 2e-5 * atZero.gradientNorm,
      `λ ${lambda}: ‖∇F‖ ${atFit.gradientNorm} at the fit, ${atZero.gradientNorm} at 0`,
    );
  }
});

Deno.test({
  name: "fitLogisticRegression: the solution and objective of PyTorch's float64 L-BFGS",
  ignore: !torchAvailable(),
  async fn() {
    const { train } = blobs(2, 120, 6, 3, 1);
    for (const lambda of [0.01, 0.1]) {
      const ours = await fitLogisticRegression(train, 6, 3, lambda, {
        tolerance: 1e-6,
        maxEpochs: 500,
        chunk: 50,
      });
      const theirs = float64Reader(
        await runTorchReference("logreg_torch.py", [], {
          features: f32(train.features, [120, 6]),
          labels: {
            dtype: "int64",
            shape: [120],
            data: BigInt64Array.from(train.labels, (y) => BigInt(y)),
          },
          classes: { dtype: "int64", shape: [1], data: BigInt64Array.of(3n) },
          lambda: f64(lambda),
        }),
      );
      assert(theirs("gradient_norm")[0] < 1e-9, `PyTorch's ‖∇F‖ ${theirs("gradient_norm")[0]}`);
      // Our gradients are float32 sums: F agrees to 1e-7, W (set by ∇F = 0) to 1e-4 of its scale.
      assertCloseToScale(ours.objective, theirs("objective")[0], `objective (λ ${lambda})`, 1e-7);
      assertCloseToScale(ours.weight, theirs("weight"), `weight (λ ${lambda})`, 1e-4);
    }
  },
});

Deno.test("logisticRegressionSweep: one fit per λ, scored as the host scores it", async () => {
  const { train, test } = blobs(3, 200, 10, 7, 1.6);
  const lambdas = [0.001, 0.01, 1];
  const seen: number[] = [];
  const report = await logisticRegressionSweep(train, test, 10, 7, {
    lambdas,
    chunk: 48,
    onLambda: (r) => seen.push(r.lambda),
  });
  assert.deepEqual(seen, lambdas);
  assert.deepEqual(report.results.map((r) => r.lambda), lambdas);
  const norms = report.results.map((r) => Math.hypot(...r.weight));
  assert(norms[0] > norms[1] && norms[1] > norms[2], `‖W‖ falls as λ grows: ${norms}`);
  for (const r of report.results) {
    const logits = linearPredict(
      { weight: r.weight, bias: new Float32Array(7) },
      test.features,
      10,
    );
    let top1 = 0;
    let top5 = 0;
    test.labels.forEach((y, i) => {
      const row = logits.subarray(i * 7, (i + 1) * 7);
      const rank = row.filter((v, c) => v > row[y] || (v === row[y] && c < y)).length;
      if (rank < 1) top1++;
      if (rank < 5) top5++;
    });
    assert.equal(r.top1, 100 * top1 / test.labels.length, `top-1 of λ ${r.lambda}`);
    assert.equal(r.top5, 100 * top5 / test.labels.length, `top-5 of λ ${r.lambda}`);
  }
  const tops = report.results.map((r) => r.top1);
  assert(tops.every((t) => t > 100 / 7 && t < 100), `better than chance, not perfect: ${tops}`);
  assert.equal(report.best.top1, Math.max(...tops));
  assert.deepEqual(OFFICIAL_LAMBDAS, [0.01, 0.1, 1]);
});

Deno.test("logisticRegressionSweep: rejects bad options and labels in one sentence", async () => {
  const { train, test } = blobs(4, 20, 4, 2, 1);
  await assert.rejects(
    () => logisticRegressionSweep(train, test, 4, 2, { lambdas: [] }),
    /lambdas/,
  );
  await assert.rejects(() => logisticRegressionSweep(train, test, 4, 1), /outside \[0, 1\)/);
  await assert.rejects(() => logisticRegressionSweep(train, test, 5, 2), /features hold/);
  await assert.rejects(() => fitLogisticRegression(train, 4, 2, 0), /lambdas must be/);
});

Deno.test("tasks/logistic_regression.ts: a tiny checkpoint end to end", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const checkpoint = await tinyVitCheckpoint(dir);
    const run = await runDenoTask("logistic_regression", [
      ...["--pretrained_weights", checkpoint, "--lr_lambd", "0.1", "1"],
      ...["--batch_size_per_gpu", "16", "--num_workers", "1", "--epochs", "20"],
    ]);
    assert.equal(run.code, 0, `${run.stdout}\n${run.stderr}`);
    assert.match(run.stdout, /48 train and 16 test rows of dim 96, 10 classes/);
    const lines = run.stdout.split("\n").filter((l) => l.startsWith("Logistic regression result"));
    assert.deepEqual(
      lines.map((l) => l.match(/^Logistic regression result \(lambda ([\d.]+)\): Top1: /)?.[1]),
      ["0.1", "1"],
    );
    assert.match(run.stdout, /^Best: lambda (0\.1|1), Top1: \d+\.\d\d, Top5: \d+\.\d\d/m);
    const refused = await runDenoTask("logistic_regression", [
      ...["--pretrained_weights", checkpoint, "--lr_lambd", "0"],
    ]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /--lr_lambd takes positive numbers, got 0/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
