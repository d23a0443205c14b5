/**
 * Mixup and CutMix with label smoothing (issue 13: "mixup/cutmix mixing and soft-target loss,
 * label smoothing" against PyTorch). Given the same λ and box centre, the mixed images and soft
 * targets equal `tests/reference/mixup_torch.py`'s (timm's 'batch' mode) to 1e-6; the draws
 * follow the distributions timm samples from.
 */

import { assert, assertClose } from "../assert.ts";
import { f64, i64, runTorchReference, torchAvailable } from "../reference/torch.ts";
import {
  applyMixup,
  cutmixBox,
  cutmixDraw,
  Mixup,
  type MixupDraw,
  sampleBeta,
  sampleGamma,
  smoothedOneHot,
} from "../../lib/data/mixup.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";
import { Rng } from "../../lib/runtime/rng.ts";

const HAS_TORCH = torchAvailable();

const OFFICIAL = {
  mixupAlpha: 0.8,
  cutmixAlpha: 1.0,
  prob: 1.0,
  switchProb: 0.5,
  labelSmoothing: 0.1,
  numClasses: 7,
};

Deno.test("smoothedOneHot puts 1 − ε + ε/C on the label and ε/C elsewhere", () => {
  const targets = smoothedOneHot(Int32Array.from([2, 0]), 4, 0.1);
  assertClose(targets, [0.025, 0.025, 0.925, 0.025, 0.925, 0.025, 0.025, 0.025]);
  assert.throws(() => smoothedOneHot(Int32Array.from([4]), 4, 0.1), /label 4 of row 0/);
});

Deno.test("cutmixBox follows rand_bbox: floor sides, half on each side, clipped", () => {
  // lam 0.75: ratio 0.5, cut 5 of 10 rows and 4 of 8 columns, halves 2 and 2.
  assert.deepEqual(cutmixBox(10, 8, 0.75, 5, 4), { top: 3, bottom: 7, left: 2, right: 6 });
  assert.deepEqual(cutmixBox(10, 8, 0.75, 0, 7), { top: 0, bottom: 2, left: 5, right: 8 });
  const clipped = cutmixDraw(10, 8, 0.75, 0, 7);
  assert.equal(clipped.lam, 1 - (2 * 3) / 80);
});

Deno.test("applyMixup with λ = 1 leaves the images and gives smoothed one-hot targets", () => {
  const images = Float32Array.from({ length: 2 * 3 * 4 * 4 }, (_, i) => i);
  const labels = Int32Array.from([1, 3]);
  const mixed = applyMixup(images, labels, 2, 4, 4, { lam: 1, box: null }, OFFICIAL);
  assert.deepEqual(mixed.images, images);
  assert.deepEqual(mixed.targets, smoothedOneHot(labels, 7, 0.1));
  assert.notEqual(mixed.images, images);
});

Deno.test("Mixup rejects odd batches and bad settings", () => {
  const mixup = new Mixup(OFFICIAL);
  const images = new Float32Array(3 * 3 * 4 * 4);
  assert.throws(
    () => mixup.mix(images, Int32Array.from([0, 1, 2]), 3, 4, new Rng(0)),
    /even batch/,
  );
  assert.throws(() => new Mixup({ ...OFFICIAL, mixupAlpha: 0, cutmixAlpha: 0 }), /one of them/);
  assert.throws(() => new Mixup({ ...OFFICIAL, switchProb: 2 }), /switchProb/);
});

Deno.test("Gamma and Beta draws have the right mean and variance", () => {
  const rng = new Rng(7);
  const n = 40000;
  for (const shape of [0.8, 1, 3.5]) {
    const draws = Array.from({ length: n }, () => sampleGamma(shape, rng));
    const mean = draws.reduce((a, b) => a + b, 0) / n;
    const variance = draws.reduce((a, b) => a + (b - mean) ** 2, 0) / n;
    assert(Math.abs(mean - shape) < 0.03 * shape + 0.01, `Gamma(${shape}) mean ${mean}`);
    assert(Math.abs(variance - shape) < 0.08 * shape, `Gamma(${shape}) variance ${variance}`);
  }
  for (const [a, b] of [[0.8, 0.8], [1, 1], [2, 5]]) {
    const draws = Array.from({ length: n }, () => sampleBeta(a, b, rng));
    const mean = draws.reduce((s, x) => s + x, 0) / n;
    const variance = draws.reduce((s, x) => s + (x - mean) ** 2, 0) / n;
    const expectMean = a / (a + b);
    const expectVariance = a * b / ((a + b) ** 2 * (a + b + 1));
    assert(Math.abs(mean - expectMean) < 0.01, `Beta(${a}, ${b}) mean ${mean}`);
    assert(
      Math.abs(variance - expectVariance) < 0.05 * expectVariance,
      `Beta(${a}, ${b}) variance ${variance} vs ${expectVariance}`,
    );
  }
});

Deno.test("Mixup.draw switches to CutMix with switchProb and skips with 1 − prob", () => {
  const rng = new Rng(3);
  const mixup = new Mixup(OFFICIAL);
  const n = 4000;
  let cutmix = 0;
  for (let i = 0; i < n; i++) {
    const draw = mixup.draw(16, 12, rng);
    assert(draw.lam >= 0 && draw.lam <= 1);
    if (draw.box) {
      cutmix++;
      const area = (draw.box.bottom - draw.box.top) * (draw.box.right - draw.box.left);
      assert.equal(draw.lam, 1 - area / 192);
    }
  }
  assert(Math.abs(cutmix / n - 0.5) < 0.03, `CutMix share ${cutmix / n}`);
  const never = new Mixup({ ...OFFICIAL, prob: 0 });
  assert.deepEqual(never.draw(16, 12, rng), { lam: 1, box: null });
  const onlyCutmix = new Mixup({ ...OFFICIAL, mixupAlpha: 0 });
  assert(onlyCutmix.draw(16, 12, rng).box !== null);
});

Deno.test({
  name: "mixed images and soft targets equal timm's Mixup (PyTorch reference) to 1e-6",
  ignore: !HAS_TORCH,
  async fn() {
    const rng = new Rng(11);
    const [batch, height, width, classes] = [6, 9, 7, 7];
    const images = Float32Array.from({ length: batch * 3 * height * width }, () => rng.normal());
    const labels = Int32Array.from({ length: batch }, () => rng.int(classes));
    const cases: { lam: number; cutmix: boolean; cy: number; cx: number }[] = [
      { lam: 0.6180339887, cutmix: false, cy: 0, cx: 0 },
      { lam: 0.3125, cutmix: true, cy: 4, cx: 3 },
      { lam: 0.05, cutmix: true, cy: 1, cx: 6 },
      { lam: 1, cutmix: false, cy: 0, cx: 0 },
    ];
    for (const { lam, cutmix, cy, cx } of cases) {
      const draw: MixupDraw = cutmix ? cutmixDraw(height, width, lam, cy, cx) : { lam, box: null };
      const ours = applyMixup(images, labels, batch, height, width, draw, OFFICIAL);
      const inputs: Record<string, NamedTensor> = {
        images: { dtype: "float32", shape: [batch, 3, height, width], data: images },
        labels: {
          dtype: "int64",
          shape: [batch],
          data: BigInt64Array.from(labels, (l) => BigInt(l)),
        },
        num_classes: i64(classes),
        cutmix: i64(cutmix),
        center_y: i64(cy),
        center_x: i64(cx),
        lam: f64(lam),
        smoothing: f64(OFFICIAL.labelSmoothing),
      };
      const torch = await runTorchReference("mixup_torch.py", [], inputs);
      const what = cutmix ? `CutMix λ ${lam}` : `mixup λ ${lam}`;
      assertClose([ours.lam], torch.get("lam")!.data as Float64Array, 0, 1e-12, `${what} λ`);
      assertClose(ours.images, torch.get("images")!.data as Float32Array, 0, 1e-6, what);
      assertClose(ours.targets, torch.get("targets")!.data as Float32Array, 0, 1e-6, what);
      if (lam !== 1) assert.notDeepEqual(ours.images, images, `${what} changes the images`);
    }
  },
});
