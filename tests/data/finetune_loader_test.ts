/**
 * The fine-tuning data pipeline: Pillow's resize, the official evaluation transform and the
 * train crop equal Pillow's byte for byte; a plan applies its crop, flip, RandAugment and erasing
 * in the official order; the worker loader delivers the same batches whatever the number of
 * workers, as the main thread computes them, with the official drop-last and evaluation padding.
 *
 * Pillow's outputs are held as golden records (size and SHA-256 of the bytes, per case) in
 * tests/data/fixtures/resize_pil.json, so the comparison needs no Python. To regenerate them where
 * python3-pil is installed:
 *
 *     python3 tests/reference/resize_pil.py > tests/data/fixtures/resize_pil.json
 *
 * Where Pillow is installed, one more test regenerates the records and compares them with the
 * file; it is skipped elsewhere, CI included.
 */

import { join } from "node:path";
import { assert } from "../assert.ts";
import { torchScriptOutput } from "../reference/torch.ts";
import {
  assertAllChecked,
  assertRecord,
  assertSameRecords,
  type GoldenRecords,
  noise,
  pilFound,
} from "../reference/pil_golden.ts";
import { withTempDir, writeVendoredSubset } from "./fixtures.ts";
import { flipHorizontal, IMAGENET_MEAN, IMAGENET_STD, normalize } from "../../lib/data/augment.ts";
import {
  applyFinetunePlan,
  crop,
  defaultFinetuneTransform,
  drawFinetunePlan,
  finetuneEvalTransform,
  type FinetunePlan,
  finetuneStream,
  finetuneTrainTransform,
  type ResizeFilter,
  resizeImage,
} from "../../lib/data/finetune_transform.ts";
import {
  type FinetuneBatch,
  finetuneBatches,
  finetuneEvalBatches,
  finetuneItersPerEpoch,
} from "../../lib/data/finetune_loader.ts";
import { epochOrder } from "../../lib/data/loader.ts";
import { applyOp, IMAGENET_MEAN_FILL } from "../../lib/data/rand_augment.ts";
import { applyRandomErasing } from "../../lib/data/random_erasing.ts";
import { openSource, type RawImage } from "../../lib/data/source.ts";
import { Rng } from "../../lib/runtime/rng.ts";

const FIXTURE = new URL("./fixtures/resize_pil.json", import.meta.url);
const REGENERATE = "python3 tests/reference/resize_pil.py > tests/data/fixtures/resize_pil.json";

/**
 * A test image whose byte i (HWC, column x, channel c) is (40 x + 17 c + noise(seed, i) % 60) % 256,
 * as the reference script's `synthetic_image`.
 */
function testImage(width: number, height: number, seed: number): RawImage {
  const data = Uint8Array.from(
    { length: width * height * 3 },
    (_, i) => (40 * ((i / 3 | 0) % width) + 17 * (i % 3) + noise(seed, i) % 60) % 256,
  );
  return { data, width, height };
}

/**
 * The HWC bytes that `normalize` turned into `tensor` (3 × size × size, CHW); asserts that the
 * tensor is exactly such an image.
 */
function denormalize(tensor: Float32Array, size: number): Uint8Array {
  const plane = size * size;
  const bytes = new Uint8Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    for (let p = 0; p < plane; p++) {
      bytes[3 * p + c] = Math.round(
        (tensor[c * plane + p] * IMAGENET_STD[c] + IMAGENET_MEAN[c]) * 255,
      );
    }
  }
  assert.deepEqual(normalize(bytes, size, size), tensor);
  return bytes;
}

const SQUARE = [28, 28, 1] as const;
const WIDE = [30, 20, 2] as const;
const TALL = [13, 19, 3] as const;
type ImageSpec = readonly [number, number, number];

function imageName([width, height, seed]: ImageSpec): string {
  return `${width}x${height} image ${seed}`;
}

/** Every case: its name in the golden records and our output bytes with their size. */
function cases(): { key: string; width: number; height: number; bytes: Uint8Array }[] {
  const resizes: [ImageSpec, number, number, ResizeFilter][] = [
    [SQUARE, 36, 36, "bilinear"],
    [WIDE, 11, 7, "bilinear"],
    [TALL, 40, 9, "bicubic"],
    [SQUARE, 17, 31, "bicubic"],
  ];
  // At 25 px the shorter side of the 28 px image is already int(25 / 0.875): no resize.
  const evals: [ImageSpec, number][] = [[SQUARE, 32], [WIDE, 16], [TALL, 12], [SQUARE, 25]];
  const crops: [ImageSpec, [number, number, number, number], number][] = [
    [SQUARE, [3, 5, 17, 20], 32],
    [WIDE, [0, 2, 30, 15], 16],
    [TALL, [4, 1, 6, 6], 20],
  ];
  return [
    ...resizes.map(([image, width, height, filter]) => ({
      key: `resize ${filter} ${imageName(image)} to ${width}x${height}`,
      width,
      height,
      bytes: resizeImage(testImage(...image), width, height, filter),
    })),
    ...evals.map(([image, size]) => ({
      key: `eval ${imageName(image)} at ${size}`,
      width: size,
      height: size,
      bytes: denormalize(finetuneEvalTransform(testImage(...image), size, true), size),
    })),
    ...crops.map(([image, [left, top, width, height], size]) => {
      const plan: FinetunePlan = {
        size,
        crop: { kind: "resized", box: { left, top, width, height } },
        flip: false,
        randAugment: [],
        erasing: null,
      };
      return {
        key: `crop ${width}x${height} at (${left}, ${top}) of ${imageName(image)} to ${size}`,
        width: size,
        height: size,
        bytes: denormalize(applyFinetunePlan(testImage(...image), plan), size),
      };
    }),
  ];
}

async function readGolden(): Promise<GoldenRecords> {
  return JSON.parse(await Deno.readTextFile(FIXTURE));
}

Deno.test("resize, the evaluation transform and the train crop equal Pillow's byte for byte", async () => {
  const golden = await readGolden();
  const ours = cases();
  for (const { key, width, height, bytes } of ours) {
    assertRecord(golden, key, width, height, bytes, REGENERATE);
  }
  assertAllChecked(golden, ours.map((c) => c.key));
});

Deno.test({
  name: "the golden records are what Pillow gives here (only where python3-pil is installed)",
  ignore: !pilFound(),
  async fn() {
    const golden = await readGolden();
    const fresh: GoldenRecords = JSON.parse(await torchScriptOutput("resize_pil.py"));
    assertSameRecords(golden, fresh, REGENERATE);
  },
});

Deno.test("a plan applies crop, flip, RandAugment, normalise and erasing in that order", () => {
  const image = testImage(12, 10, 4);
  const size = 14;
  const erasing = { top: 2, left: 3, height: 4, width: 5, noise: new Float32Array(3 * 4 * 5) };
  const plan: FinetunePlan = {
    size,
    crop: { kind: "padded", top: 1, left: 0 },
    flip: true,
    randAugment: [{ op: "Rotate", arg: 12 }, { op: "SolarizeAdd", arg: 40 }],
    erasing,
  };
  // The 14×14 window at (1, 0) of the image padded by 4: rows −3…10, columns −4…9.
  const window = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const [sy, sx] = [y - 3, x - 4];
      if (sy < 0 || sy >= 10 || sx < 0 || sx >= 12) continue;
      window.set(
        image.data.subarray((sy * 12 + sx) * 3, (sy * 12 + sx) * 3 + 3),
        (y * size + x) * 3,
      );
    }
  }
  const settings = { fill: IMAGENET_MEAN_FILL, resample: "bicubic" as const };
  let pixels = flipHorizontal(window, size, size);
  for (const step of plan.randAugment) pixels = applyOp(pixels, size, size, step, settings);
  const expected = normalize(pixels, size, size);
  applyRandomErasing(expected, 3, size, size, erasing);
  assert.deepEqual(applyFinetunePlan(image, plan), expected);
});

Deno.test("drawFinetunePlan follows the official settings and the resize_im switch", () => {
  const rng = new Rng(2);
  const official = defaultFinetuneTransform(224);
  assert.equal(official.resizeImages, true);
  assert.equal(defaultFinetuneTransform(32).resizeImages, false);
  let flips = 0;
  let erased = 0;
  let augmented = 0;
  const n = 2000;
  for (let i = 0; i < n; i++) {
    const plan = drawFinetunePlan(28, 28, 32, { ...official }, rng);
    assert.equal(plan.crop.kind, "resized");
    if (plan.flip) flips++;
    if (plan.erasing) erased++;
    augmented += plan.randAugment.length;
  }
  assert(Math.abs(flips / n - 0.5) < 0.04, `flip share ${flips / n}`);
  assert(Math.abs(erased / n - 0.25) < 0.035, `erasing share ${erased / n}`);
  assert(Math.abs(augmented / n - 1) < 0.07, `RandAugment ops per image ${augmented / n}`);
  const padded = drawFinetunePlan(28, 28, 32, defaultFinetuneTransform(32), rng);
  assert.equal(padded.crop.kind, "padded");
  if (padded.crop.kind === "padded") {
    assert(padded.crop.top >= 0 && padded.crop.top <= 4 && padded.crop.left <= 4);
  }
  const none = { ...official, randAugment: "", reprob: 0, hflip: 0 };
  const plain = drawFinetunePlan(28, 28, 32, none, rng);
  assert.deepEqual([plain.flip, plain.randAugment, plain.erasing], [false, [], null]);
  assert.throws(() => finetuneEvalTransform(testImage(28, 28, 0), 32, false), /must be 32×32/);
});

async function collect<T>(iterator: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of iterator) items.push(item);
  return items;
}

Deno.test("finetuneBatches: the same batches with 1 and 2 workers, as the main thread makes them", async () => {
  await withTempDir(async (dir) => {
    const source = await writeVendoredSubset("train", 40, join(dir, "i"), join(dir, "l"));
    const options = {
      size: 32,
      batchSize: 6,
      seed: 3,
      epoch: 1,
      transform: { resizeImages: true },
    };
    const one = await collect(finetuneBatches(source, { ...options, workers: 1 }));
    const two = await collect(finetuneBatches(source, { ...options, workers: 2 }));
    assert.equal(one.length, finetuneItersPerEpoch(40, 6));
    assert.equal(one.length, 6);
    assert.deepEqual(two, one);
    const order = epochOrder(40, 3, 1);
    const images = await openSource(source);
    const config = { ...defaultFinetuneTransform(32), resizeImages: true };
    for (const [k, batch] of one.entries()) {
      assert.deepEqual(Array.from(batch.indices), Array.from(order.slice(6 * k, 6 * k + 6)));
      assert.equal(batch.images.length, 6 * 3 * 32 * 32);
      for (const [b, index] of batch.indices.entries()) {
        assert.equal(batch.labels[b], images.label(index));
      }
    }
    const index = one[2].indices[4];
    const expected = finetuneTrainTransform(
      await images.load(index),
      32,
      config,
      finetuneStream(3, 1, index),
    );
    assert.deepEqual(one[2].images.subarray(4 * 3 * 32 * 32, 5 * 3 * 32 * 32), expected);
    const resumed: FinetuneBatch[] = await collect(
      finetuneBatches(source, { ...options, workers: 1, start: 4 }),
    );
    assert.deepEqual(resumed, one.slice(4));
    const other = await collect(finetuneBatches(source, { ...options, epoch: 2, workers: 1 }));
    assert.notDeepEqual(other[0].images, one[0].images);
    const ranks = await Promise.all(
      [0, 1].map((rank) =>
        collect(finetuneBatches(source, { ...options, workers: 1, rank, worldSize: 2 }))
      ),
    );
    assert.equal(ranks[0].length, 3);
    assert.notDeepEqual(ranks[0][0].indices, ranks[1][0].indices);
    await assert.rejects(
      () => collect(finetuneBatches(source, { ...options, batchSize: 41, workers: 1 })),
      /fewer than one batch of 41/,
    );
  });
});

Deno.test("finetuneEvalBatches: dataset order, padded last batch, the evaluation transform", async () => {
  await withTempDir(async (dir) => {
    const source = await writeVendoredSubset("t10k", 11, join(dir, "i"), join(dir, "l"));
    const batches = await collect(
      finetuneEvalBatches(source, { size: 32, batchSize: 4, workers: 2, resizeImages: true }),
    );
    assert.deepEqual(batches.map((b) => b.count), [4, 4, 3]);
    assert(batches.every((b) => b.total === 11 && b.images.length === 4 * 3 * 32 * 32));
    assert.deepEqual(Array.from(batches[2].indices), [8, 9, 10]);
    assert.equal(batches[2].labels[3], -1);
    assert(batches[2].images.subarray(3 * 3 * 32 * 32).every((v) => v === 0));
    const images = await openSource(source);
    const expected = finetuneEvalTransform(await images.load(9), 32, true);
    assert.deepEqual(batches[2].images.subarray(3 * 32 * 32, 2 * 3 * 32 * 32), expected);
    assert.equal(batches[2].labels[1], images.label(9));
    const part = await collect(finetuneEvalBatches(source, {
      size: 32,
      batchSize: 4,
      workers: 1,
      resizeImages: true,
      part: { rank: 1, parts: 2 },
    }));
    assert.deepEqual(part.flatMap((b) => Array.from(b.indices)), [5, 6, 7, 8, 9, 10]);
  });
});

Deno.test("crop rejects boxes outside the image", () => {
  assert.throws(
    () => crop(testImage(5, 5, 0), { left: 3, top: 0, width: 3, height: 2 }),
    /leaves the 5×5 image/,
  );
});
