import { join } from "node:path";
import { runDenoTask } from "../task_runner.ts";
import { assert, assertClose, assertCloseToScale } from "../assert.ts";
import sharp from "sharp";
import { IMAGENET_MEAN, IMAGENET_STD, randomResizedCropBox } from "../../lib/data/augment.ts";
import { randomCropBatches } from "../../lib/data/loader.ts";
import { openSource } from "../../lib/data/source.ts";
import {
  cosineLr,
  type LabelledFeatures,
  linearPredict,
  LinearProbeSweep,
  trainLinearProbes,
  trainLinearProbesPerEpoch,
} from "../../lib/eval/linear.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { loadSafetensors } from "../../lib/checkpoint/safetensors.ts";
import { parsePretrainArgs } from "../../lib/train/args.ts";
import { CHECKPOINT_FILE, IbotTrainer } from "../../lib/train/trainer.ts";
import { writeVendoredFolder, writeVendoredSubset } from "../data/fixtures.ts";

async function collect<T>(iterator: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of iterator) items.push(item);
  return items;
}

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

Deno.test("trainLinearProbes: separable blobs reach 100%, noise lowers the accuracy", async () => {
  const clean = blobs(1, 200, 16, 4, 0.1);
  const report = await trainLinearProbes(clean.train, clean.test, 16, 4, {
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
    const probe = await trainLinearProbes(data.train, data.test, 8, 5, {
      epochs: 20,
      batchSize: 32,
      lrs: [1],
    });
    tops.push(probe.best.top1);
  }
  assert(tops[0] > tops[1] && tops[1] > tops[2], `accuracy by noise: ${tops.join(", ")}`);
  assert(tops[2] > 100 / 5, `noisy blobs still beat chance: ${tops[2]}`);
});

/**
 * A straightforward reference: one classifier, plain number arrays, PyTorch's SGD (momentum,
 * weight decay) with the closed-form cosine lr, the same seeded initialisation and batch order.
 * Epoch e trains on `dataOf(e)` (the same rows every epoch, or fresh features of augmented views).
 */
function reference(
  dataOf: (epoch: number) => LabelledFeatures,
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
  const n = dataOf(0).labels.length;
  const order = Array.from({ length: n }, (_, i) => i);
  let loss = 0;
  for (let epoch = 0; epoch < epochs; epoch++) {
    const data = dataOf(epoch);
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

Deno.test("trainLinearProbes: SGD momentum + cosine matches a straightforward implementation", async () => {
  // 7 rows in batches of 3 (a partial last batch), 3 epochs: 9 steps; 5 dims. Two learning rates
  // in one sweep, each checked against the reference trained alone.
  const { train, test } = blobs(3, 7, 5, 3, 1);
  for (const [momentum, wd] of [[0.9, 0], [0.5, 0.01]]) {
    const lrs = [50, 5];
    const ours = await trainLinearProbes(train, test, 5, 3, {
      epochs: 3,
      batchSize: 3,
      lrs,
      momentum,
      weightDecay: wd,
      seed: 7,
    });
    lrs.forEach((lr, l) => {
      const theirs = reference(() => train, 5, 3, 3, 3, lr, momentum, wd, 7);
      // Ours computes in float32 on the runtime, the reference in float64.
      assertCloseToScale(ours.final[l].weight, theirs.weight, `weight (lr ${lr})`, 1e-5);
      assertCloseToScale(ours.final[l].bias, theirs.bias, `bias (lr ${lr})`, 1e-5);
      assertCloseToScale(ours.finalLoss[l], theirs.loss, `loss (lr ${lr})`, 1e-5);
      // The weights moved well away from their N(0, 0.01) start.
      assert(Math.max(...ours.final[l].weight.map(Math.abs)) > 0.05);
    });
  }
  assert.equal(cosineLr(2, 0, 10), 2);
  assertClose([cosineLr(2, 5, 10), cosineLr(2, 10, 10)], [1, 0], 0, 1e-15);
});

Deno.test("trainLinearProbes: a shared lr gives the same results alone and in a sweep", async () => {
  const { train, test } = blobs(4, 120, 10, 6, 1.5);
  const options = { epochs: 5, batchSize: 16, seed: 3, valFreq: 2 };
  const alone = await trainLinearProbes(train, test, 10, 6, { ...options, lrs: [0.5] });
  const sweep = await trainLinearProbes(train, test, 10, 6, {
    ...options,
    lrs: [0.01, 0.5, 4, 0.1],
  });
  assert.deepEqual(sweep.results[1], alone.results[0]);
  // Matrix products of other widths may round differently in float32.
  assertCloseToScale(sweep.final[1].weight, alone.final[0].weight, "weight", 1e-6);
  assertCloseToScale(sweep.final[1].bias, alone.final[0].bias, "bias", 1e-6);
  assertCloseToScale(sweep.finalLoss[1], alone.finalLoss[0], "loss", 1e-6);
  // Validation at epochs 2, 4 and the last (5) only.
  for (const r of sweep.results) assert([2, 4, 5].includes(r.bestEpoch), `${r.bestEpoch}`);
  const top = Math.max(...sweep.results.map((r) => r.top1));
  assert.equal(sweep.best.top1, top);
});

Deno.test("LinearProbeSweep: epoch by epoch equals the one-shot trainer on cached features", async () => {
  const { train, test } = blobs(6, 90, 7, 4, 1.2);
  const options = { epochs: 4, batchSize: 16, lrs: [0.05, 2], seed: 11, valFreq: 3 };
  const oneShot = await trainLinearProbes(train, test, 7, 4, options);
  const validated: number[] = [];
  const sweep = await LinearProbeSweep.create(7, 4, {
    ...options,
    onEpoch: (epoch) => validated.push(epoch),
  });
  try {
    const losses: number[][] = [];
    while (sweep.epoch < sweep.epochs) {
      // A fresh copy each epoch: the sweep keeps no reference to earlier features.
      losses.push(
        await sweep.trainEpoch({ features: train.features.slice(), labels: train.labels }),
      );
      if (sweep.validationDue) await sweep.validate(test);
    }
    assert.deepEqual(validated, [3, 4]);
    const report = await sweep.report();
    assert.deepEqual(report, oneShot);
    assert.deepEqual(losses[3], oneShot.finalLoss);
    assert(losses[3][1] < losses[0][1], `the loss falls: ${losses.map((l) => l[1])}`);
    await assert.rejects(() => sweep.trainEpoch(train), /all 4 epochs are trained/);
  } finally {
    sweep.close();
  }
});

/** Top-1 and top-5 (percent) of `logits` [n, classes]; ties rank the lower class first. */
function accuracy(logits: Float32Array, labels: Int32Array, classes: number) {
  let top1 = 0;
  let top5 = 0;
  labels.forEach((y, i) => {
    const row = logits.subarray(i * classes, (i + 1) * classes);
    const rank = row.filter((v, c) => v > row[y] || (v === row[y] && c < y)).length;
    if (rank < 1) top1++;
    if (rank < 5) top5++;
  });
  return { top1: 100 * top1 / labels.length, top5: 100 * top5 / labels.length };
}

Deno.test("LinearProbeSweep.validate: top-1 and top-5 of every classifier as counted on the host", async () => {
  // 12 classes (top-5 differs from top-1), noisy blobs (not every row right), 37 test rows.
  const { train, test } = blobs(8, 96, 6, 12, 2);
  const lrs = [0.002, 0.3, 3];
  const report = await trainLinearProbes(train, test, 6, 12, {
    epochs: 3,
    batchSize: 32,
    lrs,
    valFreq: 5,
  });
  lrs.forEach((lr, l) => {
    const expected = accuracy(linearPredict(report.final[l], test.features, 6), test.labels, 12);
    assert.equal(report.results[l].top1, expected.top1, `top-1 of lr ${lr}`);
    assert.equal(report.results[l].top5, expected.top5, `top-5 of lr ${lr}`);
    assert.equal(report.results[l].bestEpoch, 3);
  });
  const tops = report.results.map((r) => r.top1);
  assert(tops.some((t) => t > 0 && t < 100) && new Set(tops).size > 1, `top-1 ${tops}`);
  assert(report.results.some((r) => r.top5 > r.top1), "top-5 above top-1");
});

Deno.test("trainLinearProbesPerEpoch: new features each epoch match the reference", async () => {
  // Three epochs of different features (same labels), as augmented views give.
  const views = [1, 2, 3].map((seed) => blobs(seed, 7, 5, 3, 1).train);
  const labels = views[0].labels;
  const perEpoch = views.map((v) => ({ features: v.features, labels }));
  const { test } = blobs(4, 7, 5, 3, 1);
  const asked: number[] = [];
  const ours = await trainLinearProbesPerEpoch(
    (epoch) => {
      asked.push(epoch);
      return Promise.resolve(perEpoch[epoch]);
    },
    test,
    5,
    3,
    { epochs: 3, batchSize: 3, lrs: [0.5, 50], momentum: 0.9, seed: 2 },
  );
  assert.deepEqual(asked, [0, 1, 2]);
  const theirs = reference((epoch) => perEpoch[epoch], 5, 3, 3, 3, 50, 0.9, 0, 2);
  assertCloseToScale(ours.final[1].weight, theirs.weight, "weight", 1e-5);
  assertCloseToScale(ours.final[1].bias, theirs.bias, "bias", 1e-5);
  assertCloseToScale(ours.finalLoss[1], theirs.loss, "loss", 1e-5);
  // Training on the first view only gives other weights: the later views were used.
  const firstOnly = await trainLinearProbes(perEpoch[0], test, 5, 3, {
    epochs: 3,
    batchSize: 3,
    lrs: [0.5, 50],
    seed: 2,
  });
  assert.notDeepEqual(firstOnly.final[1].weight, ours.final[1].weight);
});

Deno.test("randomCropBatches: seeded RandomResizedCrop (bilinear) + flip of every image", async () => {
  const root = await Deno.makeTempDir({ prefix: "ibot_linear_crops_" });
  try {
    const spec = await writeVendoredSubset(
      "train",
      6,
      join(root, "images"),
      join(root, "labels"),
    );
    const source = await openSource(spec);
    const size = 16;
    const imageSize = 3 * size * size;
    const options = { size, batchSize: 4, seed: 3, epoch: 1, workers: 1 };
    const batches = await collect(randomCropBatches(spec, options));
    assert.deepEqual(batches.map((b) => b.count), [4, 2]);
    assert.deepEqual([...batches[1].labels.subarray(2)], [-1, -1]);
    assert(batches[1].images.subarray(2 * imageSize).every((v) => v === 0));
    const flips: boolean[] = [];
    const boxes: string[] = [];
    for (let i = 0; i < 6; i++) {
      const batch = batches[Math.floor(i / 4)];
      const row = i % 4;
      assert.equal(batch.labels[row], source.label(i));
      // Independently: the box and the flip drawn from the image's generator, a bilinear resize
      // by sharp, the mirror and the ImageNet normalisation written out here.
      const image = await source.load(i);
      const rng = new Rng(3).fork(`linear:1:${i}`);
      const box = randomResizedCropBox(image.width, image.height, [0.08, 1], rng);
      const flip = rng.uniform() < 0.5;
      flips.push(flip);
      boxes.push(JSON.stringify(box));
      const resized = await sharp(image.data, {
        raw: { width: image.width, height: image.height, channels: 3 },
      }).extract(box).resize(size, size, { kernel: "linear", fit: "fill" }).raw().toBuffer();
      const expected = new Float32Array(imageSize);
      for (let c = 0; c < 3; c++) {
        for (let y = 0; y < size; y++) {
          for (let x = 0; x < size; x++) {
            const from = 3 * (y * size + (flip ? size - 1 - x : x)) + c;
            expected[c * size * size + y * size + x] = (resized[from] / 255 - IMAGENET_MEAN[c]) /
              IMAGENET_STD[c];
          }
        }
      }
      assert.deepEqual(batch.images.subarray(row * imageSize, (row + 1) * imageSize), expected);
    }
    // The seed gives both flipped and unflipped images, and different boxes.
    assert(flips.includes(true) && flips.includes(false), `flips ${flips}`);
    assert(new Set(boxes).size > 1, `boxes ${boxes}`);
    // Deterministic and independent of the worker count; another epoch draws other crops.
    const again = await collect(randomCropBatches(spec, { ...options, workers: 2 }));
    assert.deepEqual(again.map((b) => b.images), batches.map((b) => b.images));
    const next = await collect(randomCropBatches(spec, { ...options, epoch: 2 }));
    assert.notDeepEqual(next[0].images, batches[0].images);
    await assert.rejects(
      () => collect(randomCropBatches(spec, { ...options, scale: [0.5, 0.2] })),
      /scale must satisfy/,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("trainLinearProbes: rejects mismatched features and out-of-range labels", async () => {
  const { train, test } = blobs(5, 10, 4, 2, 1);
  await assert.rejects(() => trainLinearProbes(train, test, 5, 2), /features hold/);
  await assert.rejects(() => trainLinearProbes(train, test, 4, 1), /outside/);
  await assert.rejects(() => trainLinearProbes(train, test, 4, 2, { lrs: [] }), /lrs/);
});

Deno.test("deno task linear: a tiny checkpoint end to end, cached and --augment", async () => {
  const root = await Deno.makeTempDir({ prefix: "ibot_linear_test_" });
  try {
    const data = await writeVendoredFolder(join(root, "data"), 48, 16);
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
    const checkpoint = join(output, CHECKPOINT_FILE);
    const linear = async (...extra: string[]) => {
      const { code, stdout: out, stderr } = await runDenoTask("linear", [
        ...["--pretrained_weights", checkpoint, "--checkpoint_key", "student"],
        ...["--batch_size_per_gpu", "16", "--lr", "0.1", "1", "--num_workers", "1"],
        ...extra,
      ]);
      assert.equal(code, 0, `${out}\n${stderr}`);
      const saved = await loadSafetensors(join(output, "linear_student.safetensors"));
      assert.deepEqual(saved.tensors.get("linear.weight")?.shape, [10, 384]);
      assert.deepEqual(saved.tensors.get("linear.bias")?.shape, [10]);
      assert.equal(saved.metadata.checkpoint_key, "student");
      return { out, saved };
    };

    const fast = await linear("--epochs", "5");
    assert.match(fast.out, /train and 16 test rows of dim 384/);
    assert.match(fast.out, /^train features: 48 images in /m);
    assert.match(fast.out, /^linear classifiers: 5 epochs in /m);
    // Both words after --lr are swept.
    assert.match(fast.out, /^lr 0\.1 \(scaled 0\.00625\): Top1: /m);
    assert.match(fast.out, /^lr 1 \(scaled 0\.0625\): Top1: /m);
    assert.match(fast.out, /Best linear classifier: lr [\d.]+, Top1: \d+\.\d\d, Top5: \d+\.\d\d/);
    assert.equal(fast.saved.metadata.augment, "false");

    const augmented = await linear("--augment", "--epochs", "2", "--seed", "4");
    assert.match(augmented.out, /with RandomResizedCrop \+ flip/);
    assert.match(augmented.out, /^Epoch 1\/2: augmented train features: 48 images in /m);
    assert.match(augmented.out, /^Epoch 2\/2: augmented train features: 48 images in /m);
    assert.match(augmented.out, /^test features: 16 images in /m);
    assert.match(
      augmented.out,
      /48 train \(augmented anew each epoch\) and 16 test rows of dim 384/,
    );
    assert.match(augmented.out, /^Epoch 2: best Top1 so far /m);
    assert.equal(augmented.saved.metadata.augment, "true");
    const top1 = Number(
      augmented.out.match(/Best linear classifier: lr [\d.]+, Top1: ([\d.]+)/)![1],
    );
    assert.equal(Number(augmented.saved.metadata.top1).toFixed(2), top1.toFixed(2));
    // The same seed gives the same classifier; the fast path (other features) does not.
    const repeat = await linear("--augment", "--epochs", "2", "--seed", "4");
    const weight = (run: typeof fast) => run.saved.tensors.get("linear.weight")!.data;
    assert.deepEqual(weight(repeat), weight(augmented));
    const fastTwo = await linear("--epochs", "2", "--seed", "4");
    assert.notDeepEqual(weight(fastTwo), weight(augmented));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
