import sharp from "sharp";
import { assert, assertClose } from "../assert.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import {
  adjustBrightness,
  adjustContrast,
  adjustHue,
  adjustSaturation,
  applyCropPlan,
  colorJitter,
  type CropPlan,
  cropSpecs,
  drawCropPlan,
  evalTransform,
  extendedBoxRadius,
  flipHorizontal,
  gaussianBlur,
  grayscale,
  IMAGENET_MEAN,
  IMAGENET_STD,
  multiCrop,
  normalize,
  randomResizedCropBox,
  roundHalfEven,
  solarize,
} from "../../lib/data/augment.ts";
import type { RawImage } from "../../lib/data/source.ts";
import { SMALL_CROPS } from "./fixtures.ts";

/** An Rng that returns scripted values: `uniforms` for uniform(), `ints` for int(n). */
class ScriptedRng extends Rng {
  constructor(private uniforms: number[], private ints: number[] = []) {
    super(0);
  }
  override uniform(): number {
    const value = this.uniforms.shift();
    if (value === undefined) throw new Error("ScriptedRng: no uniform left");
    return value;
  }
  override int(n: number): number {
    const value = this.ints.shift();
    if (value === undefined || value >= n) throw new Error(`ScriptedRng: no int < ${n} left`);
    return value;
  }
  get unused(): number {
    return this.uniforms.length + this.ints.length;
  }
}

/** A smooth, colourful `width` × `height` test image. */
function testImage(width: number, height: number): RawImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 3; c++) {
        data[3 * (y * width + x) + c] = Math.round(
          127.5 + 127 * Math.sin(0.3 * x + 2 * c) * Math.cos(0.2 * y - c),
        );
      }
    }
  }
  return { data, width, height };
}

Deno.test("roundHalfEven rounds like Python", () => {
  assert.deepEqual(
    [0.5, 1.5, 2.5, 2.4999, 2.5001, -0.5, -1.5, 7].map(roundHalfEven),
    [0, 2, 2, 2, 3, 0, -2, 7],
  );
});

Deno.test("randomResizedCropBox: boxes fit, and area, aspect and position follow the draws", () => {
  const rng = new Rng(7);
  for (const [width, height] of [[224, 160], [30, 300], [5, 4]]) {
    for (let i = 0; i < 2000; i++) {
      const box = randomResizedCropBox(width, height, [0.08, 1], rng);
      assert(box.width >= 1 && box.height >= 1);
      assert(box.left >= 0 && box.left + box.width <= width, `box ${JSON.stringify(box)}`);
      assert(box.top >= 0 && box.top + box.height <= height, `box ${JSON.stringify(box)}`);
    }
  }

  const side = 200;
  const n = 20_000;
  let logAspectSum = 0;
  let leftSum = 0;
  for (let i = 0; i < n; i++) {
    const box = randomResizedCropBox(side, side, [0.08, 1], rng);
    const fraction = box.width * box.height / (side * side);
    assert(fraction >= 0.07 && fraction <= 1, `area fraction ${fraction}`);
    const aspect = box.width / box.height;
    assert(aspect > 0.72 && aspect < 1.38, `aspect ${aspect}`);
    logAspectSum += Math.log(aspect);
    leftSum += box.width < side ? box.left / (side - box.width) : 0.5;
  }
  assert(Math.abs(logAspectSum / n) < 0.005, `mean log aspect ${logAspectSum / n}`);
  assert(Math.abs(leftSum / n - 0.5) < 0.01, `mean relative left ${leftSum / n}`);

  const small = new Rng(8);
  let meanFraction = 0;
  for (let i = 0; i < n; i++) {
    const box = randomResizedCropBox(1000, 1000, [0.05, 0.4], small);
    meanFraction += box.width * box.height / 1e6 / n;
  }
  assert(Math.abs(meanFraction - 0.225) < 0.005, `mean area fraction ${meanFraction}`);
});

Deno.test("randomResizedCropBox: the first fitting attempt, drawn top then left", () => {
  // Attempt 1: area 0.5·100·100, aspect e^(log(4/3)) = 4/3 → 82 × 61 fits; top 3, left 5.
  const rng = new ScriptedRng([0.5 / 0.9 - 0.1 / 0.9, 1], [3, 5]);
  const box = randomResizedCropBox(100, 100, [0.1, 1], rng);
  assert.deepEqual(box, { left: 5, top: 3, width: 82, height: 61 });
  assert.equal(rng.unused, 0);
});

Deno.test("randomResizedCropBox falls back to a central crop with the ratio clamped", () => {
  const rng = new Rng(1);
  assert.deepEqual(randomResizedCropBox(50, 50, [2, 3], rng), {
    left: 0,
    top: 0,
    width: 50,
    height: 50,
  });
  assert.deepEqual(randomResizedCropBox(100, 20, [2, 3], rng), {
    left: 36,
    top: 0,
    width: 27,
    height: 20,
  });
  assert.deepEqual(randomResizedCropBox(20, 100, [2, 3], rng), {
    left: 0,
    top: 36,
    width: 20,
    height: 27,
  });
});

Deno.test("drawCropPlan draws in the official order with the official comparisons", () => {
  const spec = { size: 8, scale: [1, 1] as const, blurProbability: 0.1, solarizeProbability: 0.2 };
  // crop (2 uniforms, 2 ints), flip 0.49 → yes, jitter 0.8 → no, gray 0.19 → yes,
  // blur 0.1 → yes (≤) with sigma U = 0.5 → 1.05, solarize 0.2 → no (<).
  const rng = new ScriptedRng([0.5, 0.5, 0.49, 0.8, 0.19, 0.1, 0.5, 0.2], [0, 0]);
  const plan = drawCropPlan(10, 10, spec, rng);
  assert.deepEqual(plan.box, { left: 0, top: 0, width: 10, height: 10 });
  assert.equal(plan.flip, true);
  assert.equal(plan.jitter, null);
  assert.equal(plan.grayscale, true);
  assertClose([plan.blurSigma!], [1.05]);
  assert.equal(plan.solarize, false);
  assert.equal(rng.unused, 0);

  // Jitter applied (0.79 < 0.8): a Fisher–Yates permutation (ints 0, 2, 1 swap only the first
  // and last), then the brightness, contrast, saturation and hue factors; no blur (0.6 > 0.1).
  const jitterRng = new ScriptedRng(
    [0.5, 0.5, 0.5, 0.79, 0, 1, 0.5, 0.25, 0.3, 0.6],
    [0, 0, 0, 2, 1],
  );
  const jittered = drawCropPlan(10, 10, { ...spec, solarizeProbability: 0 }, jitterRng);
  assert.deepEqual(jittered.jitter!.order, ["hue", "contrast", "saturation", "brightness"]);
  assertClose(
    [jittered.jitter!.brightness, jittered.jitter!.contrast, jittered.jitter!.saturation],
    [0.6, 1.4, 1.0],
  );
  assertClose([jittered.jitter!.hue], [-0.05]);
  assert.equal(jittered.flip, false);
  assert.equal(jittered.grayscale, false);
  assert.equal(jittered.blurSigma, null);
  assert.equal(jittered.solarize, false);
  assert.equal(jitterRng.unused, 0);
});

Deno.test("crop plans follow the per-crop probabilities of the recipe", () => {
  const specs = cropSpecs({ ...SMALL_CROPS, globalCropsNumber: 3 });
  assert.deepEqual(
    specs.map((s) => [s.size, s.blurProbability, s.solarizeProbability]),
    [[32, 1, 0], [32, 0.1, 0.2], [32, 0.1, 0.2], [16, 0.5, 0], [16, 0.5, 0], [16, 0.5, 0], [
      16,
      0.5,
      0,
    ]],
  );
  const rng = new Rng(3);
  const n = 5000;
  const rate = (spec: (typeof specs)[number], pick: (p: CropPlan) => boolean) => {
    let hits = 0;
    for (let i = 0; i < n; i++) if (pick(drawCropPlan(50, 40, spec, rng))) hits++;
    return hits / n;
  };
  const near = (actual: number, expected: number, what: string) =>
    assert(Math.abs(actual - expected) < 0.025, `${what}: ${actual} vs ${expected}`);
  near(rate(specs[0], (p) => p.blurSigma !== null), 1, "global 1 blur");
  near(rate(specs[0], (p) => p.solarize), 0, "global 1 solarize");
  near(rate(specs[1], (p) => p.blurSigma !== null), 0.1, "global 2 blur");
  near(rate(specs[1], (p) => p.solarize), 0.2, "global 2 solarize");
  near(rate(specs[3], (p) => p.blurSigma !== null), 0.5, "local blur");
  near(rate(specs[3], (p) => p.flip), 0.5, "flip");
  near(rate(specs[3], (p) => p.jitter !== null), 0.8, "jitter");
  near(rate(specs[3], (p) => p.grayscale), 0.2, "grayscale");
  for (let i = 0; i < 200; i++) {
    const { blurSigma } = drawCropPlan(50, 40, specs[0], rng);
    assert(blurSigma! >= 0.1 && blurSigma! < 2.0, `sigma ${blurSigma}`);
  }
});

Deno.test("multiCrop: shapes, determinism for one seed, normalised range", async () => {
  const image = testImage(28, 28);
  const crops = await multiCrop(image, SMALL_CROPS, new Rng(11));
  assert.deepEqual(crops.map((c) => c.length), [3072, 3072, 768, 768, 768, 768]);
  const again = await multiCrop(image, SMALL_CROPS, new Rng(11));
  crops.forEach((crop, i) => assert.deepEqual(crop, again[i], `crop ${i} differs`));
  const other = await multiCrop(image, SMALL_CROPS, new Rng(12));
  assert.notDeepEqual(crops[0], other[0]);

  for (const crop of crops) {
    const plane = crop.length / 3;
    for (let c = 0; c < 3; c++) {
      const low = (0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
      const high = (1 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
      for (let p = 0; p < plane; p++) {
        const v = crop[c * plane + p];
        assert(v >= low - 1e-6 && v <= high + 1e-6, `value ${v} outside [${low}, ${high}]`);
      }
    }
  }
});

Deno.test("normalize: CHW layout and ImageNet statistics", () => {
  const out = normalize(Uint8Array.of(0, 128, 255, 255, 0, 51), 2, 1);
  const expected = [0, 255, 128, 0, 255, 51].map((v, i) => {
    const c = Math.floor(i / 2);
    return (v / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
  });
  assertClose(out, expected);
  assertClose([out[0]], [-2.117904]);
});

Deno.test("flip, solarize and grayscale on crafted pixels", () => {
  const pixels = Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18);
  assert.deepEqual(
    [...flipHorizontal(pixels, 3, 2)],
    [7, 8, 9, 4, 5, 6, 1, 2, 3, 16, 17, 18, 13, 14, 15, 10, 11, 12],
  );
  assert.deepEqual([...solarize(Uint8Array.of(0, 127, 128, 200, 255, 64))], [
    0,
    127,
    127,
    55,
    0,
    64,
  ]);
  assert.deepEqual(
    [...grayscale(Uint8Array.of(255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30))],
    [76, 76, 76, 150, 150, 150, 29, 29, 29, 18, 18, 18],
  );
});

Deno.test("colour adjustments use PIL's blends, truncated and clamped", () => {
  assert.deepEqual([...adjustBrightness(Uint8Array.of(100, 200, 51), 1.5)], [150, 255, 76]);
  assert.deepEqual([...adjustBrightness(Uint8Array.of(100, 201, 51), 0.5)], [50, 100, 25]);
  // Grayscale mean of black and white is 127.5 → 128.
  const blackWhite = Uint8Array.of(0, 0, 0, 255, 255, 255);
  assert.deepEqual([...adjustContrast(blackWhite, 0.5)], [64, 64, 64, 191, 191, 191]);
  assert.deepEqual([...adjustContrast(blackWhite, 1.5)], [0, 0, 0, 255, 255, 255]);
  const colour = Uint8Array.of(200, 100, 50);
  assert.deepEqual([...adjustSaturation(colour, 1)], [200, 100, 50]);
  assert.deepEqual([...adjustSaturation(colour, 0)], [...grayscale(colour)]);
  assert.deepEqual([...adjustSaturation(colour, 1.2)], [215, 95, 35]);
});

Deno.test("hue shifts rotate through Pillow's 8-bit HSV", () => {
  const red = Uint8Array.of(255, 0, 0);
  assert.deepEqual([...adjustHue(red, 0.25)], [132, 255, 0]);
  assert.deepEqual([...adjustHue(red, -0.25)], [138, 0, 255]);
  assert.deepEqual([...adjustHue(red, 0)], [255, 0, 0]);
  assert.deepEqual([...adjustHue(Uint8Array.of(90, 90, 90), 0.3)], [90, 90, 90]);
  const image = testImage(16, 16).data;
  const roundTrip = adjustHue(image, 0);
  for (let i = 0; i < image.length; i++) {
    assert(Math.abs(roundTrip[i] - image[i]) <= 6, `hue 0 changed ${image[i]} to ${roundTrip[i]}`);
  }
  assert.throws(() => adjustHue(red, 0.6), /outside \[-0.5, 0.5\]/);
});

Deno.test("colorJitter applies the adjustments in the plan's order", () => {
  const pixels = Uint8Array.of(200, 100, 50, 10, 20, 30);
  const plan = { brightness: 1.3, contrast: 0.7, saturation: 1.1, hue: 0.05 };
  const a = colorJitter(pixels, {
    ...plan,
    order: ["brightness", "contrast", "saturation", "hue"],
  });
  const b = colorJitter(pixels, {
    ...plan,
    order: ["hue", "saturation", "contrast", "brightness"],
  });
  const manual = adjustHue(
    adjustSaturation(adjustContrast(adjustBrightness(pixels, 1.3), 0.7), 1.1),
    0.05,
  );
  assert.deepEqual([...a], [...manual]);
  assert.notDeepEqual([...a], [...b]);
});

Deno.test("gaussianBlur: PIL's three extended-box passes approximate a Gaussian", async () => {
  for (const sigma of [0.1, 0.3, 0.7, 1, 1.5, 2]) {
    const r = extendedBoxRadius(sigma, 3);
    const l = Math.floor(r);
    const alpha = r - l;
    let second = 2 * alpha * (l + 1) ** 2;
    for (let k = 1; k <= l; k++) second += 2 * k * k;
    assertClose([3 * second / (2 * r + 1)], [sigma * sigma], 1e-9, 1e-12, `variance at ${sigma}`);
  }

  const flat = new Uint8Array(10 * 8 * 3).fill(99);
  assert.deepEqual([...gaussianBlur(flat, 10, 8, 1.7)], [...flat]);

  const { data, width, height } = testImage(40, 30);
  const tiny = gaussianBlur(data, width, height, 0.1);
  for (let i = 0; i < data.length; i++) assert(Math.abs(tiny[i] - data[i]) <= 1);

  for (const sigma of [0.5, 1, 2]) {
    const ours = gaussianBlur(data, width, height, sigma);
    const exact = await sharp(data, { raw: { width, height, channels: 3 } })
      .blur({ sigma, minAmplitude: 0.001, precision: "float" }).raw().toBuffer();
    let worst = 0;
    for (let y = 8; y < height - 8; y++) {
      for (let x = 8; x < width - 8; x++) {
        for (let c = 0; c < 3; c++) {
          const i = 3 * (y * width + x) + c;
          worst = Math.max(worst, Math.abs(ours[i] - exact[i]));
        }
      }
    }
    assert(worst <= 3, `sigma ${sigma}: interior differs from a Gaussian by ${worst}`);
  }
  assert.throws(() => gaussianBlur(flat, 10, 8, 0), /sigma > 0/);
});

Deno.test("applyCropPlan: whole-image plans with flip, solarize, grayscale or blur", async () => {
  const image = testImage(12, 10);
  const base: CropPlan = {
    box: { left: 0, top: 0, width: 12, height: 10 },
    size: 10,
    flip: false,
    jitter: null,
    grayscale: false,
    blurSigma: null,
    solarize: false,
  };
  const squeezed = await sharp(image.data, { raw: { width: 12, height: 10, channels: 3 } })
    .resize(10, 10, { kernel: "cubic", fit: "fill" }).raw().toBuffer();
  const pixels = new Uint8Array(squeezed);
  assert.deepEqual(await applyCropPlan(image, base), normalize(pixels, 10, 10));
  assert.deepEqual(
    await applyCropPlan(image, { ...base, flip: true, solarize: true, grayscale: true }),
    normalize(solarize(grayscale(flipHorizontal(pixels, 10, 10))), 10, 10),
  );
  assert.deepEqual(
    await applyCropPlan(image, { ...base, blurSigma: 1.2 }),
    normalize(gaussianBlur(pixels, 10, 10, 1.2), 10, 10),
  );

  const cropped = await applyCropPlan(image, {
    ...base,
    box: { left: 2, top: 3, width: 5, height: 5 },
    size: 5,
  });
  const expected = new Uint8Array(5 * 5 * 3);
  for (let y = 0; y < 5; y++) {
    expected.set(image.data.subarray(3 * ((y + 3) * 12 + 2), 3 * ((y + 3) * 12 + 7)), 15 * y);
  }
  assert.deepEqual(cropped, normalize(expected, 5, 5));
});

Deno.test("evalTransform: output size and the centre crop", async () => {
  const wide = testImage(60, 40);
  const out = await evalTransform(wide, 32, 40);
  assert.equal(out.length, 3 * 32 * 32);
  // The shorter side already has 40 px, so no resize: the crop starts at (14, 4).
  const expected = new Uint8Array(32 * 32 * 3);
  for (let y = 0; y < 32; y++) {
    expected.set(wide.data.subarray(3 * ((y + 4) * 60 + 14), 3 * ((y + 4) * 60 + 46)), 96 * y);
  }
  assert.deepEqual(out, normalize(expected, 32, 32));

  const flat = { data: new Uint8Array(50 * 30 * 3).fill(200), width: 50, height: 30 };
  const resized = await evalTransform(flat, 24);
  assert.equal(resized.length, 3 * 24 * 24);
  assertClose(resized.subarray(0, 24 * 24), new Array(24 * 24).fill((200 / 255 - 0.485) / 0.229));
  await assert.rejects(evalTransform(flat, 24, 20), /resize 20 px is smaller than the crop 24 px/);
});
