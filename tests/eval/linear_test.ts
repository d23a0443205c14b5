import { join } from "node:path";
import { assert, assertClose } from "../assert.ts";
import { cosineLr, type LabelledFeatures, trainLinearProbes } from "../../lib/eval/linear.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { loadSafetensors } from "../../lib/runtime/safetensors.ts";
import { parsePretrainArgs } from "../../lib/train/args.ts";
import { CHECKPOINT_FILE, IbotTrainer } from "../../lib/train/trainer.ts";
import { writeVendoredSubset } from "../data/fixtures.ts";

const REPO = new URL("../../", import.meta.url).pathname;

/** `n` rows of Gaussian blobs: class centres N(0, 1)·`spread` in `dim` dims plus N(0, noise²). */
function blobs(
  seed: number,
  n: number,
  dim: number,
  classes: number,
  noise: number,
): { train: LabelledFeatures; test: LabelledFeatures } {
  const rng = new Rng(seed);
  const centres = Float64Array.from({ length: classes * dim }, () => rng.normal());
  const make = (rows: number): LabelledFeatures => {
    const features = new Float32Array(rows * dim);
    const labels = new Int32Array(rows);
    for (let i = 0; i < rows; i++) {
      labels[i] = i % classes;
      for (let d = 0; d < dim; d++) {
        features[i * dim + d] = centres[labels[i] * dim + d] + noise * rng.normal();
      }
    }
    return { features, labels };
  };
  return { train: make(n), test: make(Math.ceil(n / 2)) };
}

Deno.test("trainLinearProbes: separable blobs reach 100%, noise lowers the accuracy", () => {
  const clean = blobs(1, 200, 16, 4, 0.1);
  const report = trainLinearProbes(clean.train, clean.test, 16, 4, {
    epochs: 10,
    batchSize: 32,
    lrs: [0.1, 1],
  });
  assert.equal(report.best.top1, 100);
  assert.equal(report.best.top5, 100);
  for (const r of report.results) assert.equal(r.top1, 100, `lr ${r.lr}`);
  const tops: number[] = [];
  for (const noise of [0.1, 1, 3]) {
    const data = blobs(2, 400, 8, 5, noise);
    tops.push(
      trainLinearProbes(data.train, data.test, 8, 5, { epochs: 20, batchSize: 32, lrs: [1] })
        .best.top1,
    );
  }
  assert(tops[0] > tops[1] && tops[1] > tops[2], `accuracy by noise: ${tops.join(", ")}`);
  assert(tops[2] > 100 / 5, `noisy blobs still beat chance: ${tops[2]}`);
});

/**
 * A straightforward reference: one classifier, plain number arrays, PyTorch's SGD (momentum,
 * weight decay) with the closed-form cosine lr, the same seeded initialisation and batch order.
 */
function reference(
  data: LabelledFeatures,
  dim: number,
  classes: number,
  epochs: number,
  batchSize: number,
  baseLr: number,
  momentum: number,
  wd: number,
  seed: number,
) {
  const rng = new Rng(seed);
  const W: number[][] = [];
  for (let c = 0; c < classes; c++) {
    W.push([]);
    for (let d = 0; d < dim; d++) W[c].push(Math.fround(rng.normal(0, 0.01)));
  }
  const bias = new Array(classes).fill(0);
  let bufW: number[][] | null = null;
  let bufB: number[] | null = null;
  const n = data.labels.length;
  const order = Array.from({ length: n }, (_, i) => i);
  let loss = 0;
  for (let epoch = 0; epoch < epochs; epoch++) {
    for (let i = n - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [order[i], order[j]] = [order[j], order[i]];
    }
    const lr = baseLr * batchSize / 256 * (1 + Math.cos(Math.PI * epoch / epochs)) / 2;
    loss = 0;
    for (let start = 0; start < n; start += batchSize) {
      const batch = order.slice(start, start + batchSize);
      const gW = W.map((row) => row.map(() => 0));
      const gB = bias.map(() => 0);
      for (const i of batch) {
        const x = Array.from(data.features.subarray(i * dim, (i + 1) * dim));
        const z = W.map((row, c) => row.reduce((s, w, d) => s + w * x[d], 0) + bias[c]);
        const max = Math.max(...z);
        const e = z.map((v) => Math.exp(v - max));
        const sum = e.reduce((a, b) => a + b, 0);
        loss += Math.log(sum) + max - z[data.labels[i]];
        for (let c = 0; c < classes; c++) {
          const g = (e[c] / sum - (c === data.labels[i] ? 1 : 0)) / batch.length;
          gB[c] += g;
          for (let d = 0; d < dim; d++) gW[c][d] += g * x[d];
        }
      }
      const dW = gW.map((row, c) => row.map((g, d) => g + wd * W[c][d]));
      const dB = gB.map((g, c) => g + wd * bias[c]);
      bufW = bufW === null ? dW : bufW.map((row, c) => row.map((b, d) => momentum * b + dW[c][d]));
      bufB = bufB === null ? dB : bufB.map((b, c) => momentum * b + dB[c]);
      for (let c = 0; c < classes; c++) {
        for (let d = 0; d < dim; d++) W[c][d] -= lr * bufW[c][d];
        bias[c] -= lr * bufB[c];
      }
    }
  }
  return { weight: W.flat(), bias, loss: loss / n };
}

Deno.test("trainLinearProbes: SGD momentum + cosine matches a straightforward implementation", () => {
  // 7 rows in batches of 3 (a partial last batch), 3 epochs: 9 steps; 5 dims (not a multiple of 4).
  const { train, test } = blobs(3, 7, 5, 3, 1);
  for (const [momentum, wd] of [[0.9, 0], [0.5, 0.01]]) {
    const ours = trainLinearProbes(train, test, 5, 3, {
      epochs: 3,
      batchSize: 3,
      lrs: [50],
      momentum,
      weightDecay: wd,
      seed: 7,
    });
    const theirs = reference(train, 5, 3, 3, 3, 50, momentum, wd, 7);
    // Both compute in float64; ours returns float32 parameters.
    assertClose(ours.final[0].weight, theirs.weight.map(Math.fround), 1e-6, 1e-9, "weight");
    assertClose(ours.final[0].bias, theirs.bias.map(Math.fround), 1e-6, 1e-9, "bias");
    assertClose(ours.finalLoss, [theirs.loss], 1e-12, 0, "loss");
    // The weights moved well away from their N(0, 0.01) start.
    assert(Math.max(...ours.final[0].weight.map(Math.abs)) > 0.05);
  }
  assert.equal(cosineLr(2, 0, 10), 2);
  assertClose([cosineLr(2, 5, 10), cosineLr(2, 10, 10)], [1, 0], 0, 1e-15);
});

Deno.test("trainLinearProbes: a shared lr gives identical results alone and in a sweep", () => {
  const { train, test } = blobs(4, 120, 10, 6, 1.5);
  const options = { epochs: 5, batchSize: 16, seed: 3, valFreq: 2 };
  const alone = trainLinearProbes(train, test, 10, 6, { ...options, lrs: [0.5] });
  const sweep = trainLinearProbes(train, test, 10, 6, { ...options, lrs: [0.01, 0.5, 4, 0.1] });
  assert.deepEqual(sweep.results[1], alone.results[0]);
  assert.deepEqual(sweep.final[1], alone.final[0]);
  assert.equal(sweep.finalLoss[1], alone.finalLoss[0]);
  // Validation at epochs 2, 4 and the last (5) only.
  for (const r of sweep.results) assert([2, 4, 5].includes(r.bestEpoch), `${r.bestEpoch}`);
  const top = Math.max(...sweep.results.map((r) => r.top1));
  assert.equal(sweep.best.top1, top);
});

Deno.test("trainLinearProbes: rejects mismatched features and out-of-range labels", () => {
  const { train, test } = blobs(5, 10, 4, 2, 1);
  assert.throws(() => trainLinearProbes(train, test, 5, 2), /features hold/);
  assert.throws(() => trainLinearProbes(train, test, 4, 1), /outside/);
  assert.throws(() => trainLinearProbes(train, test, 4, 2, { lrs: [] }), /lrs/);
});

Deno.test("deno task linear: probes a tiny checkpoint end to end", async () => {
  const root = await Deno.makeTempDir({ prefix: "ibot_linear_test_" });
  try {
    const data = join(root, "data");
    await Deno.mkdir(data);
    for (const [prefix, count] of [["train", 48], ["t10k", 16]] as const) {
      await writeVendoredSubset(
        prefix,
        count,
        join(data, `${prefix}-images-idx3-ubyte`),
        join(data, `${prefix}-labels-idx1-ubyte`),
      );
    }
    const output = join(root, "run");
    await Deno.mkdir(output);
    const { args } = parsePretrainArgs([
      ...["--arch", "vit_mini", "--patch_size", "4", "--img_size", "16"],
      ...["--global_crop_size", "16", "--local_crop_size", "8", "--local_crops_number", "1"],
      ...["--batch_size_per_gpu", "16", "--out_dim", "32", "--patch_out_dim", "32"],
      ...["--head_hidden_dim", "32", "--head_bottleneck_dim", "16"],
      ...["--epochs", "1", "--warmup_epochs", "0", "--warmup_teacher_temp_epochs", "0"],
      ...["--knn_eval", "false", "--num_workers", "1", "--threads", "1"],
      ...["--data_path", data, "--output_dir", output],
    ]);
    const trainer = await IbotTrainer.create(args, () => {});
    try {
      await trainer.train();
    } finally {
      await trainer.close();
    }
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: [
        ...["run", "--allow-read", "--allow-write", "--allow-env", "--allow-ffi", "--allow-sys"],
        join(REPO, "tasks/linear.ts"),
        ...["--pretrained_weights", join(output, CHECKPOINT_FILE), "--checkpoint_key", "student"],
        ...[
          "--epochs",
          "5",
          "--batch_size_per_gpu",
          "16",
          "--lr",
          "0.1",
          "1",
          "--num_workers",
          "1",
        ],
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const out = new TextDecoder().decode(stdout);
    assert.equal(code, 0, `${out}\n${new TextDecoder().decode(stderr)}`);
    assert.match(out, /train and 16 test rows of dim 384/);
    assert.match(out, /^lr 0\.1 \(scaled 0\.00625\): Top1: /m);
    assert.match(out, /Best linear classifier: lr [\d.]+, Top1: \d+\.\d\d, Top5: \d+\.\d\d/);
    const saved = await loadSafetensors(join(output, "linear_student.safetensors"));
    assert.deepEqual(saved.tensors.get("linear.weight")?.shape, [10, 384]);
    assert.deepEqual(saved.tensors.get("linear.bias")?.shape, [10]);
    assert.equal(saved.metadata.checkpoint_key, "student");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
