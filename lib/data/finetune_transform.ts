/**
 * The image transforms of the official fine-tuning (`run_class_finetuning.py`'s `build_transform`,
 * which calls timm's `create_transform`), on {@link RawImage}s, in Pillow's arithmetic:
 *
 * - train: RandomResizedCrop(size, scale 0.08–1, ratio 3/4–4/3, bicubic), horizontal flip
 *   (p 0.5), RandAugment (`rand-m9-mstd0.5-inc1`), ToTensor + Normalize (ImageNet mean and std),
 *   random erasing (p 0.25, per-pixel normal noise) on the normalised tensor. timm ignores the
 *   colour-jitter setting when RandAugment is on, so there is none. For inputs of 32 px or less
 *   the official script replaces the crop by RandomCrop(size, padding 4) (`resize_im` false).
 * - eval: Resize(int(size / crop_pct)) of the shorter side, bilinear (crop_pct 224/256 below
 *   384 px, else 1), CenterCrop(size), ToTensor + Normalize; for inputs of 32 px or less no resize
 *   and no crop at all.
 *
 * Resizing is Pillow's `Image.resize` (separable convolution, kernel support scaled when
 * shrinking, 22-bit fixed-point weights), written out here so the results are Pillow's.
 *
 * Each image draws its whole {@link FinetunePlan} first ({@link drawFinetunePlan}), then the plan
 * is applied ({@link applyFinetunePlan}).
 *
 * @module
 */

import { Rng } from "../runtime/rng.ts";
import {
  type CropBox,
  flipHorizontal,
  normalize,
  randomResizedCropBox,
  roundHalfEven,
} from "./augment.ts";
import {
  applyRandAugment,
  drawRandAugment,
  IMAGENET_MEAN_FILL,
  parseRandAugment,
  type RandAugmentConfig,
  type RandAugmentStep,
} from "./rand_augment.ts";
import { applyRandomErasing, drawRandomErasing, type RandomErasingPlan } from "./random_erasing.ts";
import type { RawImage } from "./source.ts";

/** The train transform's settings, named after the official arguments. */
export interface FinetuneTransformConfig {
  /** timm's RandAugment string (`--aa`); "" for none. */
  randAugment: string;
  /** Random erasing probability (`--reprob`); 0 for none. */
  reprob: number;
  /** Area-scale range of RandomResizedCrop. */
  scale: readonly [number, number];
  /** Aspect-ratio range (width / height) of RandomResizedCrop. */
  ratio: readonly [number, number];
  /** Horizontal flip probability. */
  hflip: number;
  /**
   * The official `resize_im`: RandomResizedCrop for training and Resize + CenterCrop for
   * evaluation when true; RandomCrop(size, padding 4) and no resize when false. The official
   * value is `size > 32`; 28 px images at 32 px need true.
   */
  resizeImages: boolean;
}

/** The official settings for an input side of `size` px. */
export function defaultFinetuneTransform(size: number): FinetuneTransformConfig {
  return {
    randAugment: "rand-m9-mstd0.5-inc1",
    reprob: 0.25,
    scale: [0.08, 1],
    ratio: [3 / 4, 4 / 3],
    hflip: 0.5,
    resizeImages: size > 32,
  };
}

/** Checks a configuration; throws one sentence naming the first setting out of range. */
export function checkFinetuneTransform(config: FinetuneTransformConfig): void {
  if (config.randAugment !== "") parseRandAugment(config.randAugment);
  for (const [name, value] of [["reprob", config.reprob], ["hflip", config.hflip]] as const) {
    if (!(value >= 0 && value <= 1)) throw new Error(`${name} must be in [0, 1], got ${value}`);
  }
  const [low, high] = config.scale;
  if (!(low > 0 && low <= high && high <= 1)) {
    throw new Error(`scale must satisfy 0 < low ≤ high ≤ 1, got [${low}, ${high}]`);
  }
  if (!(config.ratio[0] > 0 && config.ratio[0] <= config.ratio[1])) {
    throw new Error(
      `ratio must satisfy 0 < low ≤ high, got [${config.ratio[0]}, ${config.ratio[1]}]`,
    );
  }
}

/** Where the training crop comes from. */
export type FinetuneCrop =
  | { kind: "resized"; box: CropBox }
  | { kind: "padded"; top: number; left: number };

/** Everything random about one training image. */
export interface FinetunePlan {
  /** Output side in pixels. */
  size: number;
  /** The crop: a box resized bicubic to size, or a size × size window of the 4-px padded image. */
  crop: FinetuneCrop;
  /** Whether to mirror the crop left to right. */
  flip: boolean;
  /** The RandAugment operations to apply. */
  randAugment: RandAugmentStep[];
  /** The erased rectangle and its noise, or null. */
  erasing: RandomErasingPlan | null;
}

const PADDING = 4;

/**
 * Draws one training image's plan for a `width` × `height` image, in the order of the official
 * transforms: the crop (RandomResizedCrop's box, or RandomCrop's top then left on the padded
 * image), the flip (`u < hflip`), the RandAugment steps, the random erasing.
 */
export function drawFinetunePlan(
  width: number,
  height: number,
  size: number,
  config: FinetuneTransformConfig,
  rng: Rng,
): FinetunePlan {
  let crop: FinetuneCrop;
  if (config.resizeImages) {
    crop = {
      kind: "resized",
      box: randomResizedCropBox(width, height, config.scale, rng, config.ratio),
    };
  } else {
    const [paddedWidth, paddedHeight] = [width + 2 * PADDING, height + 2 * PADDING];
    if (paddedWidth < size || paddedHeight < size) {
      throw new Error(
        `RandomCrop(${size}, padding ${PADDING}) needs images of at least ${size - 2 * PADDING} ` +
          `px a side, got ${width}×${height}`,
      );
    }
    const top = paddedHeight === size ? 0 : rng.int(paddedHeight - size + 1);
    const left = paddedWidth === size ? 0 : rng.int(paddedWidth - size + 1);
    crop = { kind: "padded", top, left };
  }
  const flip = rng.uniform() < config.hflip;
  const randAugment = config.randAugment === ""
    ? []
    : drawRandAugment(parseRandAugment(config.randAugment), rng);
  const erasing = config.reprob > 0
    ? drawRandomErasing(3, size, size, rng, { probability: config.reprob })
    : null;
  return { size, crop, flip, randAugment, erasing };
}

/** The fill colour and resampling of the fine-tuning RandAugment: ImageNet mean, bicubic. */
const RAND_AUGMENT_SETTINGS: Pick<RandAugmentConfig, "fill" | "resample"> = {
  fill: IMAGENET_MEAN_FILL,
  resample: "bicubic",
};

/** Applies a plan to an image; returns the normalised CHW float32 tensor, 3·size·size. */
export function applyFinetunePlan(image: RawImage, plan: FinetunePlan): Float32Array {
  checkImage(image);
  const { size } = plan;
  let pixels = plan.crop.kind === "resized"
    ? resizeImage(crop(image, plan.crop.box), size, size, "bicubic")
    : paddedWindow(image, plan.crop.top, plan.crop.left, size);
  if (plan.flip) pixels = flipHorizontal(pixels, size, size);
  if (plan.randAugment.length > 0) {
    pixels = applyRandAugment(pixels, size, size, plan.randAugment, RAND_AUGMENT_SETTINGS);
  }
  const tensor = normalize(pixels, size, size);
  if (plan.erasing) applyRandomErasing(tensor, 3, size, size, plan.erasing);
  return tensor;
}

/**
 * The random stream of image `index`'s fine-tuning augmentation in `epoch`:
 * `new Rng(seed).fork("finetune:<epoch>:<index>")`.
 */
export function finetuneStream(seed: number, epoch: number, index: number): Rng {
  return new Rng(seed).fork(`finetune:${epoch}:${index}`);
}

/** The train transform of one image: {@link drawFinetunePlan} then {@link applyFinetunePlan}. */
export function finetuneTrainTransform(
  image: RawImage,
  size: number,
  config: FinetuneTransformConfig,
  rng: Rng,
): Float32Array {
  return applyFinetunePlan(image, drawFinetunePlan(image.width, image.height, size, config, rng));
}

/**
 * The official evaluation transform: with `resizeImages`, the shorter side resized bilinear to
 * int(size / cropPct) (the longer one scaled and truncated, as torchvision's `Resize(int)`), then
 * the centre size × size crop (offsets rounded half to even); without, the image as it is, which
 * must then be size × size. Normalised CHW float32, 3·size·size. `cropPct` defaults to 224/256
 * below 384 px and 1 from there, as the official script.
 */
export function finetuneEvalTransform(
  image: RawImage,
  size: number,
  resizeImages: boolean = size > 32,
  cropPct: number = size < 384 ? 224 / 256 : 1,
): Float32Array {
  checkImage(image);
  const { width, height } = image;
  if (!resizeImages) {
    if (width !== size || height !== size) {
      throw new Error(
        `without resizing the evaluation images must be ${size}×${size} px, got ${width}×${height}`,
      );
    }
    return normalize(image.data, size, size);
  }
  if (!(cropPct > 0 && cropPct <= 1)) throw new Error(`cropPct must be in (0, 1], got ${cropPct}`);
  const short = Math.trunc(size / cropPct);
  const outWidth = width <= height ? short : Math.trunc(short * width / height);
  const outHeight = width <= height ? Math.trunc(short * height / width) : short;
  const resized = (width <= height ? width : height) === short ? image : {
    data: resizeImage(image, outWidth, outHeight, "bilinear"),
    width: outWidth,
    height: outHeight,
  };
  const box = {
    left: roundHalfEven((resized.width - size) / 2),
    top: roundHalfEven((resized.height - size) / 2),
    width: size,
    height: size,
  };
  return normalize(crop(resized, box).data, size, size);
}

/** The part of an image inside `box` (which must lie within it). */
export function crop(image: RawImage, box: CropBox): RawImage {
  const { left, top, width, height } = box;
  if (left < 0 || top < 0 || left + width > image.width || top + height > image.height) {
    throw new Error(
      `the crop ${width}×${height} at (${left}, ${top}) leaves the ${image.width}×${image.height} image`,
    );
  }
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const from = ((top + y) * image.width + left) * 3;
    data.set(image.data.subarray(from, from + width * 3), y * width * 3);
  }
  return { data, width, height };
}

/** The size × size window at (`top`, `left`) of the image padded by 4 black pixels each side. */
function paddedWindow(image: RawImage, top: number, left: number, size: number): Uint8Array {
  const out = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    const sourceY = top + y - PADDING;
    if (sourceY < 0 || sourceY >= image.height) continue;
    for (let x = 0; x < size; x++) {
      const sourceX = left + x - PADDING;
      if (sourceX < 0 || sourceX >= image.width) continue;
      const from = (sourceY * image.width + sourceX) * 3;
      out.set(image.data.subarray(from, from + 3), (y * size + x) * 3);
    }
  }
  return out;
}

/** The resampling filters of {@link resizeImage}. */
export type ResizeFilter = "bilinear" | "bicubic";

const PRECISION_BITS = 22;

/**
 * Pillow's `Image.resize((outWidth, outHeight), filter)` of an RGB image: a horizontal then a
 * vertical pass of a separable convolution (triangle or a = −0.5 cubic kernel, its support
 * widened by the scale when shrinking), weights normalised and held in 22-bit fixed point,
 * rounded and clamped to bytes after each pass. Returns HWC RGB bytes.
 */
export function resizeImage(
  image: RawImage,
  outWidth: number,
  outHeight: number,
  filter: ResizeFilter,
): Uint8Array {
  checkImage(image);
  const { width, height } = image;
  if (outWidth === width && outHeight === height) return image.data.slice();
  let pixels = image.data;
  if (outWidth !== width) {
    const weights = resampleWeights(width, outWidth, filter);
    const out = new Uint8Array(outWidth * height * 3);
    for (let y = 0; y < height; y++) {
      convolve(pixels, y * width * 3, 3, weights, out, y * outWidth * 3, 3);
    }
    pixels = out;
  }
  if (outHeight !== height) {
    const weights = resampleWeights(height, outHeight, filter);
    const out = new Uint8Array(outWidth * outHeight * 3);
    for (let x = 0; x < outWidth; x++) {
      convolve(pixels, x * 3, outWidth * 3, weights, out, x * 3, outWidth * 3);
    }
    pixels = out;
  }
  return pixels;
}

/** Per output index: the first input index, and the fixed-point weights from there. */
interface Weights {
  first: Int32Array;
  taps: Int32Array[];
}

/** Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for one axis. */
function resampleWeights(inSize: number, outSize: number, filter: ResizeFilter): Weights {
  const kernel = filter === "bilinear" ? triangle : cubicHalf;
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const inverse = 1 / filterScale;
  const support = (filter === "bilinear" ? 1 : 2) * filterScale;
  const first = new Int32Array(outSize);
  const taps: Int32Array[] = [];
  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale;
    const low = Math.max(0, Math.trunc(center - support + 0.5));
    const high = Math.min(inSize, Math.trunc(center + support + 0.5));
    const raw = Array.from(
      { length: high - low },
      (_, k) => kernel((k + low - center + 0.5) * inverse),
    );
    const total = raw.reduce((a, b) => a + b, 0);
    first[i] = low;
    taps.push(Int32Array.from(raw, (w) => {
      const normalised = total !== 0 ? w / total : w;
      return Math.trunc(
        normalised < 0
          ? -0.5 + normalised * 2 ** PRECISION_BITS
          : 0.5 + normalised * 2 ** PRECISION_BITS,
      );
    }));
  }
  return { first, taps };
}

/**
 * One pass along an axis for every channel: output j (at `outStart + j·outStride`) is the
 * weighted sum of the inputs at `start + (first[j] + k)·stride`, rounded and clamped to a byte.
 */
function convolve(
  input: Uint8Array,
  start: number,
  stride: number,
  weights: Weights,
  output: Uint8Array,
  outStart: number,
  outStride: number,
): void {
  for (let j = 0; j < weights.first.length; j++) {
    const taps = weights.taps[j];
    const base = start + weights.first[j] * stride;
    for (let c = 0; c < 3; c++) {
      let sum = 1 << (PRECISION_BITS - 1);
      for (let k = 0; k < taps.length; k++) sum += input[base + k * stride + c] * taps[k];
      const value = Math.floor(sum / 2 ** PRECISION_BITS);
      output[outStart + j * outStride + c] = value < 0 ? 0 : value > 255 ? 255 : value;
    }
  }
}

function triangle(x: number): number {
  const t = Math.abs(x);
  return t < 1 ? 1 - t : 0;
}

/** Pillow's bicubic resampling kernel, a = −0.5. */
function cubicHalf(x: number): number {
  const a = -0.5;
  const t = Math.abs(x);
  if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
  if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
  return 0;
}

function checkImage(image: RawImage): void {
  if (image.data.length !== image.width * image.height * 3) {
    throw new Error(
      `image data has ${image.data.length} bytes, ${image.width}×${image.height} RGB needs ` +
        `${image.width * image.height * 3}`,
    );
  }
}
