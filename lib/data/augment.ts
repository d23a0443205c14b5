/**
 * iBOT's multi-crop augmentation (`DataAugmentationiBOT` of the official code) and the
 * evaluation transform, on {@link RawImage}s. Cropping and bicubic resizing use sharp; the colour
 * operations, grayscale, blur and solarize work on the raw HWC RGB bytes with the formulas of
 * Pillow and torchvision, which the official code runs on PIL images, keeping uint8 results
 * (truncated and clamped to [0, 255]) between steps as PIL does.
 *
 * Randomness comes only from the {@link Rng} passed in: each crop draws its whole
 * {@link CropPlan} first (in the order of the official transforms), then the plans are applied.
 *
 * ```ts
 * import { multiCrop } from "./augment.ts";
 * import { Rng } from "../runtime/rng.ts";
 * const image = { data: new Uint8Array(28 * 28 * 3), width: 28, height: 28 };
 * const crops = await multiCrop(image, {
 *   globalCropsNumber: 2, globalCropSize: 32, globalCropsScale: [0.14, 1],
 *   localCropsNumber: 4, localCropSize: 16, localCropsScale: [0.05, 0.4],
 * }, new Rng(0)); // 6 Float32Arrays: 2 of 3·32·32, then 4 of 3·16·16
 * ```
 *
 * @module
 */

import sharp, { type Sharp } from "sharp";
import type { Rng } from "../runtime/rng.ts";
import type { RawImage } from "./source.ts";

/** ImageNet channel means (R, G, B) of pixel values scaled to [0, 1]. */
export const IMAGENET_MEAN: readonly number[] = [0.485, 0.456, 0.406];
/** ImageNet channel standard deviations (R, G, B) of pixel values scaled to [0, 1]. */
export const IMAGENET_STD: readonly number[] = [0.229, 0.224, 0.225];

/**
 * The multi-crop recipe: G global crops of `globalCropSize` px and Lc local crops of
 * `localCropSize` px, each taking a random fraction of the image area within its scale range.
 */
export interface MultiCropConfig {
  /** G ≥ 1, the number of global crops. */
  globalCropsNumber: number;
  /** Side of a global crop in pixels (224 in the paper). */
  globalCropSize: number;
  /** Range of the fraction of the image area a global crop covers, within (0, 1]. */
  globalCropsScale: readonly [number, number];
  /** Lc ≥ 0, the number of local crops. */
  localCropsNumber: number;
  /** Side of a local crop in pixels (96 in the paper). */
  localCropSize: number;
  /** Range of the fraction of the image area a local crop covers, within (0, 1]. */
  localCropsScale: readonly [number, number];
}

/** Throws one sentence naming the first field of `config` that is out of range. */
export function checkMultiCropConfig(config: MultiCropConfig): void {
  const integerAtLeast = (name: keyof MultiCropConfig, value: number, min: number) => {
    if (!Number.isInteger(value) || value < min) {
      throw new Error(`${name} must be an integer ≥ ${min}, got ${value}`);
    }
  };
  integerAtLeast("globalCropsNumber", config.globalCropsNumber, 1);
  integerAtLeast("globalCropSize", config.globalCropSize, 1);
  integerAtLeast("localCropsNumber", config.localCropsNumber, 0);
  integerAtLeast("localCropSize", config.localCropSize, 1);
  for (const name of ["globalCropsScale", "localCropsScale"] as const) {
    const [low, high] = config[name];
    if (!(low > 0 && low <= high && high <= 1)) {
      throw new Error(`${name} must satisfy 0 < low ≤ high ≤ 1, got [${low}, ${high}]`);
    }
  }
}

/** A rectangle of an image, in pixels. */
export interface CropBox {
  /** Column of the box's left edge. */
  left: number;
  /** Row of the box's top edge. */
  top: number;
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
}

/** The aspect-ratio range (width / height) of RandomResizedCrop. */
export const DEFAULT_CROP_RATIO: readonly [number, number] = [3 / 4, 4 / 3];

/**
 * torchvision 0.8 `RandomResizedCrop.get_params` for a `width` × `height` image: up to 10
 * attempts, each drawing an area fraction U(scale) and a log-uniform aspect ratio within `ratio`,
 * rounding the sides half-to-even as Python does; a box that fits gets a uniform (inclusive)
 * top-left corner, top drawn first. If no attempt fits, the central crop with the aspect ratio
 * clamped to `ratio`.
 */
export function randomResizedCropBox(
  width: number,
  height: number,
  scale: readonly [number, number],
  rng: Rng,
  ratio: readonly [number, number] = DEFAULT_CROP_RATIO,
): CropBox {
  const area = width * height;
  const logRatio = [Math.log(ratio[0]), Math.log(ratio[1])];
  for (let attempt = 0; attempt < 10; attempt++) {
    const targetArea = area * rng.uniformRange(scale[0], scale[1]);
    const aspect = Math.exp(rng.uniformRange(logRatio[0], logRatio[1]));
    const w = roundHalfEven(Math.sqrt(targetArea * aspect));
    const h = roundHalfEven(Math.sqrt(targetArea / aspect));
    if (0 < w && w <= width && 0 < h && h <= height) {
      const top = rng.int(height - h + 1);
      const left = rng.int(width - w + 1);
      return { left, top, width: w, height: h };
    }
  }
  const inRatio = width / height;
  const minRatio = Math.min(ratio[0], ratio[1]);
  const maxRatio = Math.max(ratio[0], ratio[1]);
  let w = width;
  let h = height;
  if (inRatio < minRatio) {
    h = roundHalfEven(w / minRatio);
  } else if (inRatio > maxRatio) {
    w = roundHalfEven(h * maxRatio);
  }
  return {
    left: Math.floor((width - w) / 2),
    top: Math.floor((height - h) / 2),
    width: w,
    height: h,
  };
}

/**
 * One crop of the multi-crop set: its output size, scale range, and the probabilities of its blur
 * and solarize steps. A solarize probability of 0 means the crop has no solarize step (and draws
 * nothing for it).
 */
export interface CropSpec {
  /** Output side in pixels. */
  size: number;
  /** Range of the fraction of the image area the crop covers. */
  scale: readonly [number, number];
  /** Probability of the Gaussian blur step. */
  blurProbability: number;
  /** Probability of the solarize step; 0 when the crop has none. */
  solarizeProbability: number;
}

/**
 * The G + Lc crop specs of a recipe, in output order: global crop 1 (blur p 1.0), global crops
 * 2…G (blur p 0.1, solarize p 0.2), local crops (blur p 0.5).
 */
export function cropSpecs(config: MultiCropConfig): CropSpec[] {
  const global = { size: config.globalCropSize, scale: config.globalCropsScale };
  const specs: CropSpec[] = [];
  for (let g = 0; g < config.globalCropsNumber; g++) {
    specs.push(
      g === 0
        ? { ...global, blurProbability: 1.0, solarizeProbability: 0 }
        : { ...global, blurProbability: 0.1, solarizeProbability: 0.2 },
    );
  }
  for (let l = 0; l < config.localCropsNumber; l++) {
    specs.push({
      size: config.localCropSize,
      scale: config.localCropsScale,
      blurProbability: 0.5,
      solarizeProbability: 0,
    });
  }
  return specs;
}

/** The four ColorJitter adjustments. */
export type JitterOp = "brightness" | "contrast" | "saturation" | "hue";

/** A ColorJitter draw: the order of the four adjustments and their factors. */
export interface ColorJitterPlan {
  /** The four adjustments in the order they are applied. */
  order: JitterOp[];
  /** Brightness factor in [0.6, 1.4]. */
  brightness: number;
  /** Contrast factor in [0.6, 1.4]. */
  contrast: number;
  /** Saturation factor in [0.8, 1.2]. */
  saturation: number;
  /** Hue shift in [−0.1, 0.1], as a fraction of the hue circle. */
  hue: number;
}

/** Everything random about one crop, drawn by {@link drawCropPlan}. */
export interface CropPlan {
  /** The region of the source image to crop. */
  box: CropBox;
  /** Output side in pixels. */
  size: number;
  /** Whether to mirror the crop left to right. */
  flip: boolean;
  /** The ColorJitter draw, or null when jitter is skipped. */
  jitter: ColorJitterPlan | null;
  /** Whether to convert the crop to grayscale. */
  grayscale: boolean;
  /** Gaussian blur radius (sigma) in pixels, or null when blur is skipped. */
  blurSigma: number | null;
  /** Whether to solarize the crop. */
  solarize: boolean;
}

const FLIP_PROBABILITY = 0.5;
const JITTER_PROBABILITY = 0.8;
const GRAYSCALE_PROBABILITY = 0.2;
const JITTER_OPS: readonly JitterOp[] = ["brightness", "contrast", "saturation", "hue"];
const BRIGHTNESS = 0.4;
const CONTRAST = 0.4;
const SATURATION = 0.2;
const HUE = 0.1;
const BLUR_SIGMA_RANGE = [0.1, 2.0] as const;
const SOLARIZE_THRESHOLD = 128;

/**
 * Draws one crop's plan for a `width` × `height` image, in the order of the official transforms:
 * RandomResizedCrop, flip (p 0.5), ColorJitter (p 0.8: a random permutation of the four
 * adjustments, then the brightness, contrast, saturation and hue factors), RandomGrayscale
 * (p 0.2), blur (`u ≤ p`, then sigma U[0.1, 2.0]), solarize (`u < p`, only if the spec has it).
 */
export function drawCropPlan(width: number, height: number, spec: CropSpec, rng: Rng): CropPlan {
  const box = randomResizedCropBox(width, height, spec.scale, rng);
  const flip = rng.uniform() < FLIP_PROBABILITY;
  const jitter = rng.uniform() < JITTER_PROBABILITY ? drawColorJitter(rng) : null;
  const grayscale = rng.uniform() < GRAYSCALE_PROBABILITY;
  const blurSigma = rng.uniform() <= spec.blurProbability
    ? rng.uniformRange(BLUR_SIGMA_RANGE[0], BLUR_SIGMA_RANGE[1])
    : null;
  const solarize = spec.solarizeProbability > 0 && rng.uniform() < spec.solarizeProbability;
  return { box, size: spec.size, flip, jitter, grayscale, blurSigma, solarize };
}

function drawColorJitter(rng: Rng): ColorJitterPlan {
  const order = [...JITTER_OPS];
  for (let i = order.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  return {
    order,
    brightness: rng.uniformRange(1 - BRIGHTNESS, 1 + BRIGHTNESS),
    contrast: rng.uniformRange(1 - CONTRAST, 1 + CONTRAST),
    saturation: rng.uniformRange(1 - SATURATION, 1 + SATURATION),
    hue: rng.uniformRange(-HUE, HUE),
  };
}

/**
 * Applies a plan: crop and bicubic resize to `size` × `size` (sharp), then flip, jitter,
 * grayscale, blur and solarize as planned, then normalise. Returns CHW float32, 3·size·size.
 */
export async function applyCropPlan(image: RawImage, plan: CropPlan): Promise<Float32Array> {
  const size = plan.size;
  let pixels = await cropAndResize(image, plan.box, size);
  if (plan.flip) pixels = flipHorizontal(pixels, size, size);
  if (plan.jitter) pixels = colorJitter(pixels, plan.jitter);
  if (plan.grayscale) pixels = grayscale(pixels);
  if (plan.blurSigma !== null) pixels = gaussianBlur(pixels, size, size, plan.blurSigma);
  if (plan.solarize) pixels = solarize(pixels);
  return normalize(pixels, size, size);
}

/**
 * The multi-crop views of one image: G + Lc normalised CHW float32 arrays,
 * `[global1, global2…, local1…]`, the globals 3·S·S and the locals 3·s·s long. All plans are drawn
 * from `rng` first, in crop order, so one seed gives one result.
 */
export async function multiCrop(
  image: RawImage,
  config: MultiCropConfig,
  rng: Rng,
): Promise<Float32Array[]> {
  const plans = cropSpecs(config).map((spec) => drawCropPlan(image.width, image.height, spec, rng));
  return await Promise.all(plans.map((plan) => applyCropPlan(image, plan)));
}

/**
 * The k-NN / linear-evaluation transform: resize the shorter side to `resize` px (bicubic; the
 * longer side scaled and truncated, as torchvision's `Resize(int)`), centre-crop `size` × `size`
 * (offsets rounded half-to-even), normalise. Returns CHW float32, 3·size·size.
 */
export async function evalTransform(
  image: RawImage,
  size: number,
  resize: number = Math.round(size * 256 / 224),
): Promise<Float32Array> {
  if (resize < size) {
    throw new Error(`evalTransform: resize ${resize} px is smaller than the crop ${size} px`);
  }
  const { width, height } = image;
  const outWidth = width <= height ? resize : Math.trunc(resize * width / height);
  const outHeight = width <= height ? Math.trunc(resize * height / width) : resize;
  let pipeline = rawInput(image);
  if (outWidth !== width || outHeight !== height) {
    pipeline = pipeline.resize(outWidth, outHeight, { kernel: "cubic", fit: "fill" });
  }
  const crop = {
    left: roundHalfEven((outWidth - size) / 2),
    top: roundHalfEven((outHeight - size) / 2),
    width: size,
    height: size,
  };
  return normalize(bytesOf(await pipeline.extract(crop).raw().toBuffer()), size, size);
}

/** Crops `box` out of `image` and resizes it to `size` × `size`, bicubic (sharp). HWC RGB. */
export async function cropAndResize(
  image: RawImage,
  box: CropBox,
  size: number,
): Promise<Uint8Array> {
  const buffer = await rawInput(image)
    .extract(box)
    .resize(size, size, { kernel: "cubic", fit: "fill" })
    .raw()
    .toBuffer();
  return bytesOf(buffer);
}

/** Mirrors HWC RGB pixels left to right. Returns a new array. */
export function flipHorizontal(pixels: Uint8Array, width: number, height: number): Uint8Array {
  const out = new Uint8Array(pixels.length);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const from = 3 * (y * width + x);
      const to = 3 * (y * width + width - 1 - x);
      out[to] = pixels[from];
      out[to + 1] = pixels[from + 1];
      out[to + 2] = pixels[from + 2];
    }
  }
  return out;
}

/** Applies a ColorJitter draw: its four adjustments in its order. Returns a new array. */
export function colorJitter(pixels: Uint8Array, plan: ColorJitterPlan): Uint8Array {
  for (const op of plan.order) {
    switch (op) {
      case "brightness":
        pixels = adjustBrightness(pixels, plan.brightness);
        break;
      case "contrast":
        pixels = adjustContrast(pixels, plan.contrast);
        break;
      case "saturation":
        pixels = adjustSaturation(pixels, plan.saturation);
        break;
      case "hue":
        pixels = adjustHue(pixels, plan.hue);
        break;
    }
  }
  return pixels;
}

/** Brightness: blend with black, `v·factor`, truncated to [0, 255]. Returns a new array. */
export function adjustBrightness(pixels: Uint8Array, factor: number): Uint8Array {
  const out = new Uint8Array(pixels.length);
  for (let i = 0; i < pixels.length; i++) out[i] = blendByte(0, pixels[i], factor);
  return out;
}

/**
 * Contrast: blend with the mean of the grayscale image (rounded to an integer, as Pillow's
 * ImageEnhance.Contrast), `m + factor·(v − m)`, truncated to [0, 255]. Returns a new array.
 */
export function adjustContrast(pixels: Uint8Array, factor: number): Uint8Array {
  let sum = 0;
  for (let i = 0; i < pixels.length; i += 3) sum += luma(pixels[i], pixels[i + 1], pixels[i + 2]);
  const mean = Math.floor(sum / (pixels.length / 3) + 0.5);
  const out = new Uint8Array(pixels.length);
  for (let i = 0; i < pixels.length; i++) out[i] = blendByte(mean, pixels[i], factor);
  return out;
}

/**
 * Saturation: blend each pixel with its own luma, `g + factor·(v − g)`, truncated to [0, 255].
 * Returns a new array.
 */
export function adjustSaturation(pixels: Uint8Array, factor: number): Uint8Array {
  const out = new Uint8Array(pixels.length);
  for (let i = 0; i < pixels.length; i += 3) {
    const gray = luma(pixels[i], pixels[i + 1], pixels[i + 2]);
    for (let c = 0; c < 3; c++) out[i + c] = blendByte(gray, pixels[i + c], factor);
  }
  return out;
}

/**
 * Hue (torchvision `adjust_hue` on a PIL image): convert to Pillow's 8-bit HSV, add
 * `trunc(shift·255)` to H modulo 256, convert back. `shift` is in [−0.5, 0.5]. Returns a new array.
 */
export function adjustHue(pixels: Uint8Array, shift: number): Uint8Array {
  if (shift < -0.5 || shift > 0.5) throw new Error(`hue shift ${shift} is outside [-0.5, 0.5]`);
  const offset = ((Math.trunc(shift * 255) % 256) + 256) % 256;
  const out = new Uint8Array(pixels.length);
  const hsv = [0, 0, 0];
  for (let i = 0; i < pixels.length; i += 3) {
    rgbToHsv(pixels[i], pixels[i + 1], pixels[i + 2], hsv);
    hsvToRgb((hsv[0] + offset) & 0xff, hsv[1], hsv[2], out, i);
  }
  return out;
}

/** Grayscale: each pixel's ITU-R 601 luma replicated to R, G and B. Returns a new array. */
export function grayscale(pixels: Uint8Array): Uint8Array {
  const out = new Uint8Array(pixels.length);
  for (let i = 0; i < pixels.length; i += 3) {
    out[i] = out[i + 1] = out[i + 2] = luma(pixels[i], pixels[i + 1], pixels[i + 2]);
  }
  return out;
}

/** Solarize (PIL `ImageOps.solarize`): every value v ≥ threshold becomes 255 − v. New array. */
export function solarize(pixels: Uint8Array, threshold = SOLARIZE_THRESHOLD): Uint8Array {
  const out = new Uint8Array(pixels.length);
  for (let i = 0; i < pixels.length; i++) {
    out[i] = pixels[i] >= threshold ? 255 - pixels[i] : pixels[i];
  }
  return out;
}

const BLUR_PASSES = 3;

/**
 * Gaussian blur of HWC RGB pixels with standard deviation `sigma` px, as Pillow's
 * `ImageFilter.GaussianBlur(radius=sigma)` computes it: three passes of an extended box filter
 * (a box of fractional radius, Gwosdek et al. 2011) along the rows, then three along the
 * columns, edges extended, rounding to bytes after each pass. The box radius is chosen so the
 * three passes have variance sigma² exactly, for any sigma > 0. (sharp's `blur` accepts only
 * sigma ≥ 0.3 and by default truncates its mask at 20% of the peak, and the official code blurs
 * with PIL, so this one filter serves the whole range U[0.1, 2].) Returns a new array.
 */
export function gaussianBlur(
  pixels: Uint8Array,
  width: number,
  height: number,
  sigma: number,
): Uint8Array {
  if (!(sigma > 0)) throw new Error(`gaussianBlur needs sigma > 0, got ${sigma}`);
  const radius = extendedBoxRadius(sigma, BLUR_PASSES);
  let out = pixels;
  for (let pass = 0; pass < BLUR_PASSES; pass++) out = boxBlurRows(out, width, height, radius);
  for (let pass = 0; pass < BLUR_PASSES; pass++) out = boxBlurColumns(out, width, height, radius);
  return out;
}

/**
 * The fractional radius r = l + α of an extended box whose `passes`-fold repetition has variance
 * sigma²: one box has (2l + 1) unit weights and α at each end, normalised by 2r + 1.
 */
export function extendedBoxRadius(sigma: number, passes: number): number {
  const variance = sigma * sigma / passes;
  const l = Math.floor((Math.sqrt(12 * variance + 1) - 1) / 2);
  const alpha = (2 * l + 1) * (l * (l + 1) - 3 * variance) /
    (6 * (variance - (l + 1) * (l + 1)));
  return l + alpha;
}

/**
 * One extended-box pass along each row of HWC RGB pixels, with a running window sum per row and
 * channel. Returns a new array.
 */
function boxBlurRows(
  pixels: Uint8Array,
  width: number,
  height: number,
  radius: number,
): Uint8Array {
  const out = new Uint8Array(pixels.length);
  const whole = Math.floor(radius);
  const fraction = radius - whole;
  const scale = 1 / (2 * radius + 1);
  const pad = whole + 1;
  const line = new Int32Array(width + 2 * pad);
  for (let y = 0; y < height; y++) {
    for (let c = 0; c < 3; c++) {
      const start = 3 * width * y + c;
      for (let k = 0; k < line.length; k++) {
        line[k] = pixels[start + 3 * Math.min(width - 1, Math.max(0, k - pad))];
      }
      let sum = 0;
      for (let k = pad - whole; k <= pad + whole; k++) sum += line[k];
      for (let x = 0; x < width; x++) {
        const left = pad + x - whole;
        const right = pad + x + whole;
        out[start + 3 * x] = Math.round(
          (sum + fraction * (line[left - 1] + line[right + 1])) * scale,
        );
        sum += line[right + 1] - line[left];
      }
    }
  }
  return out;
}

/**
 * One extended-box pass along each column of HWC RGB pixels, a whole row at a time (running
 * window sums for every column and channel, so memory is read in order). Returns a new array.
 */
function boxBlurColumns(
  pixels: Uint8Array,
  width: number,
  height: number,
  radius: number,
): Uint8Array {
  const out = new Uint8Array(pixels.length);
  const whole = Math.floor(radius);
  const fraction = radius - whole;
  const scale = 1 / (2 * radius + 1);
  const rowLength = 3 * width;
  const row = (y: number) => rowLength * Math.min(height - 1, Math.max(0, y));
  const sums = new Int32Array(rowLength);
  for (let k = -whole; k <= whole; k++) {
    const at = row(k);
    for (let i = 0; i < rowLength; i++) sums[i] += pixels[at + i];
  }
  for (let y = 0; y < height; y++) {
    const above = row(y - whole - 1);
    const below = row(y + whole + 1);
    const leaving = row(y - whole);
    const target = rowLength * y;
    for (let i = 0; i < rowLength; i++) {
      const edges = pixels[above + i] + pixels[below + i];
      out[target + i] = Math.round((sums[i] + fraction * edges) * scale);
      sums[i] += pixels[below + i] - pixels[leaving + i];
    }
  }
  return out;
}

/**
 * ToTensor + Normalize: HWC RGB bytes to CHW float32, `(v / 255 − mean[c]) / std[c]` with the
 * ImageNet statistics. Returns 3·height·width values.
 */
export function normalize(pixels: Uint8Array, width: number, height: number): Float32Array {
  const plane = width * height;
  const out = new Float32Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    const mean = IMAGENET_MEAN[c];
    const std = IMAGENET_STD[c];
    for (let p = 0; p < plane; p++) out[c * plane + p] = (pixels[3 * p + c] / 255 - mean) / std;
  }
  return out;
}

/** Python's `round`: to the nearest integer, ties to even. */
export function roundHalfEven(x: number): number {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff < 0.5) return floor;
  if (diff > 0.5) return floor + 1;
  return floor % 2 === 0 ? floor : floor + 1;
}

/**
 * ITU-R 601 luma, 0.299 R + 0.587 G + 0.114 B, rounded as Pillow's "L" conversion computes it
 * (16-bit fixed point).
 */
function luma(r: number, g: number, b: number): number {
  return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;
}

/** PIL's `Image.blend(degenerate, image, factor)` for one byte: truncated, clamped to [0, 255]. */
function blendByte(degenerate: number, value: number, factor: number): number {
  const blended = degenerate + factor * (value - degenerate);
  return blended <= 0 ? 0 : blended >= 255 ? 255 : Math.trunc(blended);
}

/** Pillow's RGB → HSV, every component a byte (H scaled so 256 is the full circle), into `hsv`. */
function rgbToHsv(r: number, g: number, b: number, hsv: number[]): void {
  const max = Math.max(r, g, b);
  const min = Math.min(r, g, b);
  hsv[2] = max;
  if (max === min) {
    hsv[0] = 0;
    hsv[1] = 0;
    return;
  }
  const chroma = max - min;
  const rc = (max - r) / chroma;
  const gc = (max - g) / chroma;
  const bc = (max - b) / chroma;
  const sector = r === max ? bc - gc : g === max ? 2 + rc - bc : 4 + gc - rc;
  const hue = (sector / 6 + 1) % 1;
  hsv[0] = Math.min(255, Math.trunc(hue * 255));
  hsv[1] = Math.min(255, Math.trunc(chroma / max * 255));
}

/** Pillow's HSV → RGB for byte components, written to `out[at…at+2]`. */
function hsvToRgb(h: number, s: number, v: number, out: Uint8Array, at: number): void {
  if (s === 0) {
    out[at] = out[at + 1] = out[at + 2] = v;
    return;
  }
  const scaled = h * 6 / 255;
  const sector = Math.floor(scaled);
  const f = scaled - sector;
  const fs = s / 255;
  const p = Math.round(v * (1 - fs));
  const q = Math.round(v * (1 - fs * f));
  const t = Math.round(v * (1 - fs * (1 - f)));
  switch (sector % 6) {
    case 0:
      return setRgb(out, at, v, t, p);
    case 1:
      return setRgb(out, at, q, v, p);
    case 2:
      return setRgb(out, at, p, v, t);
    case 3:
      return setRgb(out, at, p, q, v);
    case 4:
      return setRgb(out, at, t, p, v);
    default:
      return setRgb(out, at, v, p, q);
  }
}

function setRgb(out: Uint8Array, at: number, r: number, g: number, b: number): void {
  out[at] = r;
  out[at + 1] = g;
  out[at + 2] = b;
}

function rawInput(image: RawImage): Sharp {
  const expected = image.width * image.height * 3;
  if (image.data.length !== expected) {
    throw new Error(
      `image data has ${image.data.length} bytes, ${image.width}×${image.height} RGB needs ` +
        `${expected}`,
    );
  }
  return sharp(image.data, { raw: { width: image.width, height: image.height, channels: 3 } });
}

function bytesOf(buffer: Uint8Array): Uint8Array {
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}
