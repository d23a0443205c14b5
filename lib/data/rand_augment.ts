/**
 * RandAugment (Cubuk et al. 2019) as timm implements it for the official fine-tuning's
 * `--aa rand-m9-mstd0.5-inc1`: per image, 2 operations chosen uniformly with replacement from 15,
 * each applied with probability 0.5 at a magnitude drawn from N(9, 0.5²) clipped to [0, 10]; the
 * `inc1` set uses the variants whose severity increases with the magnitude. The operations work
 * on HWC RGB bytes with Pillow's arithmetic (the official code runs them on PIL images): look-up
 * tables for the tone operations, float32 blends for the enhancements, and Pillow's affine
 * sampler (pixel centres, bicubic with a = −1, bilinear, nearest) with timm's fill colour, the
 * ImageNet mean in bytes (124, 116, 104), outside the source. timm's train transform resamples
 * the geometric operations with its training interpolation, bicubic.
 *
 * {@link drawRandAugment} draws the operations and their arguments; {@link applyRandAugment}
 * applies them, so a test can apply fixed draws.
 *
 * ```ts
 * import { applyRandAugment, drawRandAugment, parseRandAugment } from "./rand_augment.ts";
 * import { Rng } from "../runtime/rng.ts";
 * const config = parseRandAugment("rand-m9-mstd0.5-inc1");
 * const pixels = new Uint8Array(32 * 32 * 3);
 * const plan = drawRandAugment(config, new Rng(0));
 * const out = applyRandAugment(pixels, 32, 32, plan, config);
 * ```
 *
 * @module
 */

import type { Rng } from "../runtime/rng.ts";
import { solarize } from "./augment.ts";

/** The operations of timm's RandAugment sets (its names). */
export type RandAugmentOpName =
  | "AutoContrast"
  | "Equalize"
  | "Invert"
  | "Rotate"
  | "Posterize"
  | "PosterizeIncreasing"
  | "Solarize"
  | "SolarizeIncreasing"
  | "SolarizeAdd"
  | "Color"
  | "ColorIncreasing"
  | "Contrast"
  | "ContrastIncreasing"
  | "Brightness"
  | "BrightnessIncreasing"
  | "Sharpness"
  | "SharpnessIncreasing"
  | "ShearX"
  | "ShearY"
  | "TranslateXRel"
  | "TranslateYRel";

/** timm's `_RAND_TRANSFORMS`, the default set. */
export const RAND_TRANSFORMS: readonly RandAugmentOpName[] = [
  "AutoContrast",
  "Equalize",
  "Invert",
  "Rotate",
  "Posterize",
  "Solarize",
  "SolarizeAdd",
  "Color",
  "Contrast",
  "Brightness",
  "Sharpness",
  "ShearX",
  "ShearY",
  "TranslateXRel",
  "TranslateYRel",
];

/** timm's `_RAND_INCREASING_TRANSFORMS`, the `inc1` set. */
export const RAND_INCREASING_TRANSFORMS: readonly RandAugmentOpName[] = [
  "AutoContrast",
  "Equalize",
  "Invert",
  "Rotate",
  "PosterizeIncreasing",
  "SolarizeIncreasing",
  "SolarizeAdd",
  "ColorIncreasing",
  "ContrastIncreasing",
  "BrightnessIncreasing",
  "SharpnessIncreasing",
  "ShearX",
  "ShearY",
  "TranslateXRel",
  "TranslateYRel",
];

/** How the geometric operations sample the source (Pillow's `resample`). */
export type Resample = "nearest" | "bilinear" | "bicubic";

/** A RandAugment configuration, as parsed from timm's string plus the transform's settings. */
export interface RandAugmentConfig {
  /** The operations to choose from. */
  ops: readonly RandAugmentOpName[];
  /** Operations applied per image (`n`, default 2). */
  layers: number;
  /** Magnitude in [0, magnitudeMax] (`m`, default 10). */
  magnitude: number;
  /** Standard deviation of the magnitude noise (`mstd`, default 0; Infinity: uniform in [0, m]). */
  magnitudeStd: number;
  /** Upper clip of the drawn magnitude (`mmax`, default 10). */
  magnitudeMax: number;
  /** Probability of applying each chosen operation (0.5). */
  probability: number;
  /** Fill colour outside the source for the geometric operations, RGB bytes. */
  fill: readonly [number, number, number];
  /** Resampling of the geometric operations. */
  resample: Resample;
}

/** timm's fill for ImageNet normalisation: the mean in bytes, min(255, round(255·mean)). */
export const IMAGENET_MEAN_FILL: readonly [number, number, number] = [124, 116, 104];

/**
 * Parses timm's RandAugment string (`rand-m9-mstd0.5-inc1`: sections `m` magnitude, `n` layers,
 * `mstd` magnitude noise (> 100 means uniform), `mmax` magnitude clip, `inc` increasing set);
 * the fill colour and resampling are the fine-tuning transform's (ImageNet mean, bicubic) unless
 * given. Throws one sentence for an unknown or malformed section (timm's `w` weights are not
 * supported).
 */
export function parseRandAugment(
  text: string,
  settings: Partial<Pick<RandAugmentConfig, "fill" | "resample">> = {},
): RandAugmentConfig {
  const [head, ...sections] = text.split("-");
  if (head !== "rand") {
    throw new Error(`a RandAugment setting starts with "rand", got "${text}"`);
  }
  const config: RandAugmentConfig = {
    ops: RAND_TRANSFORMS,
    layers: 2,
    magnitude: 10,
    magnitudeStd: 0,
    magnitudeMax: 10,
    probability: 0.5,
    fill: settings.fill ?? IMAGENET_MEAN_FILL,
    resample: settings.resample ?? "bicubic",
  };
  for (const section of sections) {
    const match = /^([a-z]+)(\d.*)$/.exec(section);
    if (!match) continue;
    const [, key, raw] = match;
    const value = Number(raw);
    if (!Number.isFinite(value)) {
      throw new Error(`RandAugment section "${section}" of "${text}" has no number`);
    }
    switch (key) {
      case "m":
        config.magnitude = Math.trunc(value);
        break;
      case "n":
        config.layers = Math.trunc(value);
        break;
      case "mstd":
        config.magnitudeStd = value > 100 ? Infinity : value;
        break;
      case "mmax":
        config.magnitudeMax = Math.trunc(value);
        break;
      case "inc":
        if (raw !== "0" && raw !== "") config.ops = RAND_INCREASING_TRANSFORMS;
        break;
      default:
        throw new Error(
          `unknown RandAugment section "${section}" in "${text}"; expected m, n, mstd, mmax or inc`,
        );
    }
  }
  return config;
}

/** One operation to apply, with its Pillow-level argument (degrees, factor, bits, ...). */
export interface RandAugmentStep {
  /** The operation. */
  op: RandAugmentOpName;
  /**
   * Its argument: degrees (Rotate), bits kept (Posterize*), threshold (Solarize*), addend
   * (SolarizeAdd), enhancement factor (Color/Contrast/Brightness/Sharpness*), shear factor
   * (Shear*), fraction of the side (Translate*Rel); unused (0) by AutoContrast, Equalize, Invert.
   */
  arg: number;
}

/**
 * Draws one image's operations, in timm's order: the `layers` operations (uniform, with
 * replacement), then for each: apply or not (`u ≤ probability`), and if applied the magnitude
 * (N(m, mstd²), or U(0, m) for an infinite mstd, clipped to [0, mmax]) and, for signed
 * arguments, the sign (negated when `u > 0.5`). Returns the applied steps with their arguments.
 */
export function drawRandAugment(config: RandAugmentConfig, rng: Rng): RandAugmentStep[] {
  const chosen = Array.from(
    { length: config.layers },
    () => config.ops[rng.int(config.ops.length)],
  );
  const steps: RandAugmentStep[] = [];
  for (const op of chosen) {
    if (config.probability < 1 && rng.uniform() > config.probability) continue;
    let magnitude = config.magnitude;
    if (config.magnitudeStd === Infinity) magnitude = rng.uniformRange(0, magnitude);
    else if (config.magnitudeStd > 0) magnitude = rng.normal(magnitude, config.magnitudeStd);
    magnitude = Math.max(0, Math.min(magnitude, config.magnitudeMax));
    steps.push({ op, arg: levelToArg(op, magnitude, rng) });
  }
  return steps;
}

/**
 * timm's `LEVEL_TO_ARG` for magnitude `level` (of 10): the operation's argument, with the sign
 * drawn from `rng` for the signed ones (negated when `u > 0.5`). Translations are returned as a
 * fraction of the side (45% at level 10).
 */
function levelToArg(op: RandAugmentOpName, level: number, rng: Rng): number {
  const fraction = level / 10;
  const signed = (value: number) => (rng.uniform() > 0.5 ? -value : value);
  switch (op) {
    case "AutoContrast":
    case "Equalize":
    case "Invert":
      return 0;
    case "Rotate":
      return signed(fraction * 30);
    case "Posterize":
      return Math.trunc(fraction * 4);
    case "PosterizeIncreasing":
      return 4 - Math.trunc(fraction * 4);
    case "Solarize":
      return Math.trunc(fraction * 256);
    case "SolarizeIncreasing":
      return 256 - Math.trunc(fraction * 256);
    case "SolarizeAdd":
      return Math.trunc(fraction * 110);
    case "Color":
    case "Contrast":
    case "Brightness":
    case "Sharpness":
      return fraction * 1.8 + 0.1;
    case "ColorIncreasing":
    case "ContrastIncreasing":
    case "BrightnessIncreasing":
    case "SharpnessIncreasing":
      return Math.max(0.1, 1 + signed(fraction * 0.9));
    case "ShearX":
    case "ShearY":
      return signed(fraction * 0.3);
    case "TranslateXRel":
    case "TranslateYRel":
      return signed(fraction * 0.45);
  }
}

/** Applies the steps in order to HWC RGB bytes; returns a new array (the input is unchanged). */
export function applyRandAugment(
  pixels: Uint8Array,
  width: number,
  height: number,
  steps: readonly RandAugmentStep[],
  settings: Pick<RandAugmentConfig, "fill" | "resample">,
): Uint8Array {
  if (pixels.length !== width * height * 3) {
    throw new Error(`RandAugment got ${pixels.length} bytes for a ${width}×${height} RGB image`);
  }
  let out = pixels;
  for (const step of steps) out = applyOp(out, width, height, step, settings);
  return out === pixels ? pixels.slice() : out;
}

/** One operation with its Pillow argument (see {@link RandAugmentStep.arg}); a new array. */
export function applyOp(
  pixels: Uint8Array,
  width: number,
  height: number,
  step: RandAugmentStep,
  settings: Pick<RandAugmentConfig, "fill" | "resample">,
): Uint8Array {
  const { arg } = step;
  const { fill, resample } = settings;
  switch (step.op) {
    case "AutoContrast":
      return autoContrast(pixels);
    case "Equalize":
      return equalize(pixels);
    case "Invert":
      return pixels.map((v) => 255 - v);
    case "Rotate":
      return rotate(pixels, width, height, arg, resample, fill);
    case "Posterize":
    case "PosterizeIncreasing":
      return posterize(pixels, arg);
    case "Solarize":
    case "SolarizeIncreasing":
      return solarize(pixels, arg);
    case "SolarizeAdd":
      return solarizeAdd(pixels, arg);
    case "Color":
    case "ColorIncreasing":
      return blend(grayscaleRgb(pixels), pixels, arg);
    case "Contrast":
    case "ContrastIncreasing":
      return blend(new Uint8Array(pixels.length).fill(grayMean(pixels)), pixels, arg);
    case "Brightness":
    case "BrightnessIncreasing":
      return blend(new Uint8Array(pixels.length), pixels, arg);
    case "Sharpness":
    case "SharpnessIncreasing":
      return blend(smooth(pixels, width, height), pixels, arg);
    case "ShearX":
      return affine(pixels, width, height, [1, arg, 0, 0, 1, 0], resample, fill);
    case "ShearY":
      return affine(pixels, width, height, [1, 0, 0, arg, 1, 0], resample, fill);
    case "TranslateXRel":
      return affine(pixels, width, height, [1, 0, arg * width, 0, 1, 0], resample, fill);
    case "TranslateYRel":
      return affine(pixels, width, height, [1, 0, 0, 0, 1, arg * height], resample, fill);
  }
}

/** Maps every byte through a 256-entry table per channel (R, G, B tables in one 768 array). */
function lookUp(pixels: Uint8Array, table: Uint8Array): Uint8Array {
  const out = new Uint8Array(pixels.length);
  for (let i = 0; i < pixels.length; i++) out[i] = table[(i % 3) * 256 + pixels[i]];
  return out;
}

/** The 768-bin histogram of HWC RGB bytes (256 per channel), as Pillow's `histogram()`. */
function histogram(pixels: Uint8Array): Float64Array {
  const counts = new Float64Array(768);
  for (let i = 0; i < pixels.length; i++) counts[(i % 3) * 256 + pixels[i]]++;
  return counts;
}

/** `ImageOps.autocontrast` (no cutoff): each channel's [lo, hi] stretched to [0, 255]. */
function autoContrast(pixels: Uint8Array): Uint8Array {
  const counts = histogram(pixels);
  const table = new Uint8Array(768);
  for (let c = 0; c < 3; c++) {
    const h = counts.subarray(c * 256, c * 256 + 256);
    let lo = 0;
    while (lo < 255 && !h[lo]) lo++;
    let hi = 255;
    while (hi > 0 && !h[hi]) hi--;
    for (let v = 0; v < 256; v++) {
      if (hi <= lo) {
        table[c * 256 + v] = v;
        continue;
      }
      const scale = 255 / (hi - lo);
      const offset = -lo * scale;
      table[c * 256 + v] = Math.min(255, Math.max(0, Math.trunc(v * scale + offset)));
    }
  }
  return lookUp(pixels, table);
}

/** `ImageOps.equalize`: each channel through its cumulative histogram. */
function equalize(pixels: Uint8Array): Uint8Array {
  const counts = histogram(pixels);
  const table = new Uint8Array(768);
  for (let c = 0; c < 3; c++) {
    const h = counts.subarray(c * 256, c * 256 + 256);
    const used = Array.from(h).filter((count) => count > 0);
    const total = used.reduce((a, b) => a + b, 0);
    const step = used.length <= 1 ? 0 : Math.floor((total - used[used.length - 1]) / 255);
    let n = Math.floor(step / 2);
    for (let v = 0; v < 256; v++) {
      table[c * 256 + v] = step === 0 ? v : Math.floor(n / step);
      n += h[v];
    }
  }
  return lookUp(pixels, table);
}

/** `ImageOps.posterize`: keeps the `bits` high bits of every byte (8 or more: unchanged). */
function posterize(pixels: Uint8Array, bits: number): Uint8Array {
  if (bits >= 8) return pixels.slice();
  const mask = ~(2 ** (8 - bits) - 1) & 0xff;
  return pixels.map((v) => v & mask);
}

/** timm's `solarize_add`: bytes below 128 get `add` more, capped at 255. */
function solarizeAdd(pixels: Uint8Array, add: number): Uint8Array {
  return pixels.map((v) => (v < 128 ? Math.min(255, v + add) : v));
}

/**
 * `Image.blend(degenerate, image, factor)` in Pillow's arithmetic: float32 `d + f·(v − d)` with f
 * rounded to float32, truncated to a byte (clamped to [0, 255] when f is outside [0, 1]).
 */
function blend(degenerate: Uint8Array, pixels: Uint8Array, factor: number): Uint8Array {
  const alpha = Math.fround(factor);
  const out = new Uint8Array(pixels.length);
  for (let i = 0; i < pixels.length; i++) {
    const d = degenerate[i];
    const value = Math.fround(d + Math.fround(alpha * (pixels[i] - d)));
    out[i] = value <= 0 ? 0 : value >= 255 ? 255 : Math.trunc(value);
  }
  return out;
}

/** Pillow's RGB → L luma (16-bit fixed point) replicated to R, G and B. */
function grayscaleRgb(pixels: Uint8Array): Uint8Array {
  const out = new Uint8Array(pixels.length);
  for (let i = 0; i < pixels.length; i += 3) {
    out[i] = out[i + 1] = out[i + 2] = luma(pixels[i], pixels[i + 1], pixels[i + 2]);
  }
  return out;
}

/** The mean luma rounded to an integer, as `ImageEnhance.Contrast` takes it. */
function grayMean(pixels: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < pixels.length; i += 3) sum += luma(pixels[i], pixels[i + 1], pixels[i + 2]);
  return Math.trunc(sum / (pixels.length / 3) + 0.5);
}

function luma(r: number, g: number, b: number): number {
  return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;
}

const SMOOTH_EDGE = Math.fround(1 / 13);
const SMOOTH_CENTER = Math.fround(5 / 13);

/**
 * Pillow's `ImageFilter.SMOOTH` (3×3 kernel 1 1 1 / 1 5 1 / 1 1 1 over 13) in float32, the row
 * below first as Pillow sums them, rounded to bytes; the border rows and columns are copied
 * unchanged, as Pillow does.
 */
function smooth(pixels: Uint8Array, width: number, height: number): Uint8Array {
  const out = pixels.slice();
  const line = 3 * width;
  const triple = (at: number, center: number) =>
    Math.fround(
      Math.fround(Math.fround(pixels[at - 3] * SMOOTH_EDGE) + Math.fround(pixels[at] * center)) +
        Math.fround(pixels[at + 3] * SMOOTH_EDGE),
    );
  for (let y = 1; y < height - 1; y++) {
    for (let x = 1; x < width - 1; x++) {
      for (let c = 0; c < 3; c++) {
        const at = y * line + 3 * x + c;
        let sum = triple(at + line, SMOOTH_EDGE);
        sum = Math.fround(sum + triple(at, SMOOTH_CENTER));
        sum = Math.fround(sum + triple(at - line, SMOOTH_EDGE));
        out[at] = sum <= 0 ? 0 : sum >= 255 ? 255 : Math.trunc(sum + 0.5);
      }
    }
  }
  return out;
}

/**
 * `Image.rotate(degrees, resample, fillcolor)` about the image centre (counter-clockwise for
 * positive degrees, the size kept): Pillow's matrix, each entry rounded to 15 decimals.
 */
function rotate(
  pixels: Uint8Array,
  width: number,
  height: number,
  degrees: number,
  resample: Resample,
  fill: readonly number[],
): Uint8Array {
  const angle = ((degrees % 360) + 360) % 360;
  if (angle === 0) return pixels.slice();
  const radians = -angle * Math.PI / 180;
  const round15 = (x: number) => Number(x.toFixed(15));
  const [a, b, d, e] = [
    round15(Math.cos(radians)),
    round15(Math.sin(radians)),
    round15(-Math.sin(radians)),
    round15(Math.cos(radians)),
  ];
  const [cx, cy] = [width / 2, height / 2];
  const c = a * -cx + b * -cy + cx;
  const f = d * -cx + e * -cy + cy;
  return affine(pixels, width, height, [a, b, c, d, e, f], resample, fill);
}

/**
 * Pillow's `Image.transform(size, AFFINE, (a, b, c, d, e, f), resample, fillcolor)`: output
 * pixel (x, y) samples the source at (a·(x + ½) + b·(y + ½) + c, d·(x + ½) + e·(y + ½) + f);
 * a point outside the source takes `fill`. Nearest takes the pixel the point falls in; bilinear
 * and bicubic (a = −1, Pillow's transform kernel) weigh the neighbours with edge pixels repeated,
 * truncating to bytes.
 */
export function affine(
  pixels: Uint8Array,
  width: number,
  height: number,
  matrix: readonly number[],
  resample: Resample,
  fill: readonly number[],
): Uint8Array {
  const [a, b, c, d, e, f] = matrix;
  const out = new Uint8Array(pixels.length);
  const sample = resample === "nearest"
    ? sampleNearest
    : resample === "bilinear"
    ? sampleBilinear
    : sampleBicubic;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const xo = x + 0.5;
      const yo = y + 0.5;
      const xin = a * xo + b * yo + c;
      const yin = d * xo + e * yo + f;
      const at = (y * width + x) * 3;
      if (xin < 0 || xin >= width || yin < 0 || yin >= height) {
        out[at] = fill[0];
        out[at + 1] = fill[1];
        out[at + 2] = fill[2];
        continue;
      }
      for (let ch = 0; ch < 3; ch++) out[at + ch] = sample(pixels, width, height, xin, yin, ch);
    }
  }
  return out;
}

function sampleNearest(
  pixels: Uint8Array,
  width: number,
  _height: number,
  xin: number,
  yin: number,
  ch: number,
): number {
  return pixels[(Math.floor(yin) * width + Math.floor(xin)) * 3 + ch];
}

function sampleBilinear(
  pixels: Uint8Array,
  width: number,
  height: number,
  xin: number,
  yin: number,
  ch: number,
): number {
  const xs = xin - 0.5;
  const ys = yin - 0.5;
  const x = Math.floor(xs);
  const y = Math.floor(ys);
  const dx = xs - x;
  const dy = ys - y;
  const x0 = clamp(x, width) * 3 + ch;
  const x1 = clamp(x + 1, width) * 3 + ch;
  let row = clamp(y, height) * width * 3;
  const v1 = pixels[row + x0] + (pixels[row + x1] - pixels[row + x0]) * dx;
  let v2 = v1;
  if (y + 1 >= 0 && y + 1 < height) {
    row = (y + 1) * width * 3;
    v2 = pixels[row + x0] + (pixels[row + x1] - pixels[row + x0]) * dx;
  }
  return Math.trunc(v1 + (v2 - v1) * dy);
}

function sampleBicubic(
  pixels: Uint8Array,
  width: number,
  height: number,
  xin: number,
  yin: number,
  ch: number,
): number {
  const xs = xin - 0.5;
  const ys = yin - 0.5;
  const x = Math.floor(xs) - 1;
  const y = Math.floor(ys) - 1;
  const dx = xs - Math.floor(xs);
  const dy = ys - Math.floor(ys);
  const columns = [0, 1, 2, 3].map((k) => clamp(x + k, width) * 3 + ch);
  const rowValue = (r: number) => {
    const row = r * width * 3;
    return cubic(
      pixels[row + columns[0]],
      pixels[row + columns[1]],
      pixels[row + columns[2]],
      pixels[row + columns[3]],
      dx,
    );
  };
  const v1 = rowValue(clamp(y, height));
  const v2 = y + 1 >= 0 && y + 1 < height ? rowValue(y + 1) : v1;
  const v3 = y + 2 >= 0 && y + 2 < height ? rowValue(y + 2) : v2;
  const v4 = y + 3 >= 0 && y + 3 < height ? rowValue(y + 3) : v3;
  const v = cubic(v1, v2, v3, v4, dy);
  return v <= 0 ? 0 : v >= 255 ? 255 : Math.trunc(v);
}

/** Pillow's transform cubic through four samples at offset d ∈ [0, 1) from the second. */
function cubic(v1: number, v2: number, v3: number, v4: number, d: number): number {
  const p1 = v2;
  const p2 = -v1 + v3;
  const p3 = 2 * (v1 - v2) + v3 - v4;
  const p4 = -v1 + v2 - v3 + v4;
  return p1 + d * (p2 + d * (p3 + d * p4));
}

function clamp(index: number, size: number): number {
  return index < 0 ? 0 : index < size ? index : size - 1;
}
