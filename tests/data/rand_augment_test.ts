/**
 * RandAugment as timm's `rand-m9-mstd0.5-inc1`: every operation, given its argument, equals
 * Pillow's byte for byte on small images; the draws pick operations uniformly, apply each with
 * probability 0.5 and turn magnitudes into arguments as timm's level functions do.
 *
 * Pillow's outputs are held as golden records (size and SHA-256 of the bytes, per case) in
 * tests/data/fixtures/rand_augment_pil.json, so the comparison needs no Python. To regenerate them
 * where python3-pil is installed:
 *
 *     python3 tests/reference/rand_augment_pil.py > tests/data/fixtures/rand_augment_pil.json
 *
 * Where Pillow is installed, one more test regenerates the records and compares them with the
 * file; it is skipped elsewhere, CI included.
 */

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
import {
  affine,
  applyOp,
  applyRandAugment,
  drawRandAugment,
  IMAGENET_MEAN_FILL,
  parseRandAugment,
  RAND_INCREASING_TRANSFORMS,
  RAND_TRANSFORMS,
  type RandAugmentStep,
  type Resample,
} from "../../lib/data/rand_augment.ts";
import { Rng } from "../../lib/runtime/rng.ts";

const FIXTURE = new URL("./fixtures/rand_augment_pil.json", import.meta.url);
const REGENERATE = "python3 tests/reference/rand_augment_pil.py > " +
  "tests/data/fixtures/rand_augment_pil.json";

/** The golden records, with the fill colour of the geometric operations. */
interface Golden extends GoldenRecords {
  fill: number[];
}

/**
 * A `width` × `height` test image: gradients, a bright block and noise, so every op acts; the
 * reference script's `synthetic_image` makes the same bytes.
 */
function testImage(width: number, height: number, seed: number): Uint8Array {
  const pixels = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const at = (y * width + x) * 3;
      const block = x > width / 3 && x < width / 2 && y > height / 4 ? 90 : 0;
      pixels[at] = Math.min(255, 20 + 15 * x + block + noise(seed, at) % 20);
      pixels[at + 1] = Math.min(255, 200 - 12 * y + noise(seed, at + 1) % 30);
      pixels[at + 2] = Math.min(255, 60 + 7 * (x + y) + block + noise(seed, at + 2) % 50);
    }
  }
  return pixels;
}

/** Steps covering every operation at several arguments, signs included. */
const STEPS: RandAugmentStep[] = [
  { op: "AutoContrast", arg: 0 },
  { op: "Equalize", arg: 0 },
  { op: "Invert", arg: 0 },
  ...[27.3, -12.9, 4.1, 90].map((arg) => ({ op: "Rotate" as const, arg })),
  ...[0, 1, 2, 4].map((arg) => ({ op: "PosterizeIncreasing" as const, arg })),
  ...[26, 128, 200].map((arg) => ({ op: "SolarizeIncreasing" as const, arg })),
  ...[99, 30].map((arg) => ({ op: "SolarizeAdd" as const, arg })),
  ...[0.19, 1.81, 0.7].map((arg) => ({ op: "ColorIncreasing" as const, arg })),
  ...[0.19, 1.81, 1.3].map((arg) => ({ op: "ContrastIncreasing" as const, arg })),
  ...[0.19, 1.81, 0.55].map((arg) => ({ op: "BrightnessIncreasing" as const, arg })),
  ...[0.19, 1.81, 1.4].map((arg) => ({ op: "SharpnessIncreasing" as const, arg })),
  ...[0.27, -0.243].map((arg) => ({ op: "ShearX" as const, arg })),
  ...[0.27, -0.243].map((arg) => ({ op: "ShearY" as const, arg })),
  ...[0.405, -0.31].map((arg) => ({ op: "TranslateXRel" as const, arg })),
  ...[0.405, -0.31].map((arg) => ({ op: "TranslateYRel" as const, arg })),
];

const GEOMETRIC = new Set(["Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"]);
const RESAMPLES: readonly Resample[] = ["bicubic", "bilinear", "nearest"];
/** Test images: width, height, seed. */
const IMAGES: readonly [number, number, number][] = [[13, 11, 1], [16, 16, 2]];

/** The cases of one resample filter: every step under bicubic, the geometric ones otherwise. */
function cases(resample: Resample) {
  const steps = resample === "bicubic" ? STEPS : STEPS.filter((s) => GEOMETRIC.has(s.op));
  return IMAGES.flatMap(([width, height, seed]) =>
    steps.map((step) => ({
      key: `${resample} ${step.op}(${step.arg}) on ${width}x${height} image ${seed}`,
      width,
      height,
      seed,
      step,
    }))
  );
}

async function readGolden(): Promise<Golden> {
  return JSON.parse(await Deno.readTextFile(FIXTURE));
}

for (const resample of RESAMPLES) {
  Deno.test(`every RandAugment operation equals Pillow's byte for byte (${resample} geometry)`, async () => {
    const golden = await readGolden();
    assert.deepEqual(golden.fill, [...IMAGENET_MEAN_FILL]);
    const settings = { fill: IMAGENET_MEAN_FILL, resample };
    for (const { key, width, height, seed, step } of cases(resample)) {
      const ours = applyOp(testImage(width, height, seed), width, height, step, settings);
      assertRecord(golden, key, width, height, ours, REGENERATE);
    }
  });
}

Deno.test("the golden records hold exactly the cases the tests check", async () => {
  const checked = RESAMPLES.flatMap((resample) => cases(resample).map((c) => c.key));
  assertAllChecked(await readGolden(), checked);
});

Deno.test({
  name: "the golden records are what Pillow gives here (only where python3-pil is installed)",
  ignore: !pilFound(),
  async fn() {
    const golden = await readGolden();
    const fresh: Golden = JSON.parse(await torchScriptOutput("rand_augment_pil.py"));
    assertSameRecords(golden, fresh, REGENERATE);
    assert.deepEqual(golden.fill, fresh.fill);
  },
});

Deno.test("parseRandAugment reads timm's string", () => {
  const config = parseRandAugment("rand-m9-mstd0.5-inc1");
  assert.equal(config.magnitude, 9);
  assert.equal(config.magnitudeStd, 0.5);
  assert.equal(config.layers, 2);
  assert.equal(config.ops, RAND_INCREASING_TRANSFORMS);
  assert.equal(config.resample, "bicubic");
  assert.deepEqual(config.fill, [124, 116, 104]);
  const other = parseRandAugment("rand-n3-m5-mstd101");
  assert.equal(other.ops, RAND_TRANSFORMS);
  assert.equal(other.layers, 3);
  assert.equal(other.magnitudeStd, Infinity);
  assert.throws(() => parseRandAugment("rand-m9-w0"), /unknown RandAugment section "w0"/);
  assert.throws(() => parseRandAugment("v0"), /starts with "rand"/);
});

Deno.test("drawRandAugment: uniform ops, p 0.5 each, arguments from timm's level functions", () => {
  const config = parseRandAugment("rand-m9-mstd0.5-inc1");
  const rng = new Rng(9);
  const counts = new Map<string, number>();
  let applied = 0;
  const n = 6000;
  for (let i = 0; i < n; i++) {
    const steps = drawRandAugment(config, rng);
    applied += steps.length;
    for (const { op, arg } of steps) {
      counts.set(op, (counts.get(op) ?? 0) + 1);
      // Magnitude N(9, 0.5²) clipped to [0, 10]: the level fraction is ≤ 1 and, short of a 6σ
      // draw, ≥ 0.6.
      switch (op) {
        case "Rotate":
          assert(Math.abs(arg) >= 18 && Math.abs(arg) <= 30, `Rotate ${arg}`);
          break;
        case "PosterizeIncreasing":
          assert(arg === 0 || arg === 1 || arg === 2, `Posterize ${arg}`);
          break;
        case "SolarizeIncreasing":
          assert(arg >= 0 && arg <= 256 - 153, `Solarize ${arg}`);
          break;
        case "SolarizeAdd":
          assert(arg >= 66 && arg <= 110, `SolarizeAdd ${arg}`);
          break;
        case "ShearX":
        case "ShearY":
          assert(Math.abs(arg) >= 0.18 && Math.abs(arg) <= 0.3, `${op} ${arg}`);
          break;
        case "TranslateXRel":
        case "TranslateYRel":
          assert(Math.abs(arg) >= 0.27 && Math.abs(arg) <= 0.45, `${op} ${arg}`);
          break;
        case "ColorIncreasing":
        case "ContrastIncreasing":
        case "BrightnessIncreasing":
        case "SharpnessIncreasing":
          assert(Math.abs(arg - 1) >= 0.54 && Math.abs(arg - 1) <= 0.9, `${op} ${arg}`);
          break;
      }
    }
  }
  assert(Math.abs(applied / (2 * n) - 0.5) < 0.02, `applied share ${applied / (2 * n)}`);
  assert.equal(counts.size, 15);
  for (const [op, count] of counts) {
    assert(Math.abs(count / applied - 1 / 15) < 0.012, `${op} share ${count / applied}`);
  }
});

Deno.test("applyRandAugment chains the steps and leaves the input unchanged", () => {
  const pixels = testImage(9, 7, 4);
  const before = pixels.slice();
  const settings = { fill: IMAGENET_MEAN_FILL, resample: "bicubic" as const };
  const steps: RandAugmentStep[] = [{ op: "Invert", arg: 0 }, { op: "SolarizeAdd", arg: 50 }];
  const out = applyRandAugment(pixels, 9, 7, steps, settings);
  const expected = applyOp(applyOp(pixels, 9, 7, steps[0], settings), 9, 7, steps[1], settings);
  assert.deepEqual(out, expected);
  assert.deepEqual(pixels, before);
  assert.deepEqual(applyRandAugment(pixels, 9, 7, [], settings), pixels);
  // The identity matrix copies the image whatever the sampler.
  for (const resample of ["nearest", "bilinear", "bicubic"] as const) {
    assert.deepEqual(affine(pixels, 9, 7, [1, 0, 0, 0, 1, 0], resample, [0, 0, 0]), pixels);
  }
});
