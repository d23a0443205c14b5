/**
 * Mixup and CutMix of a training batch with label smoothing, as timm's `Mixup` does in its
 * 'batch' mode (the official fine-tuning's `--mixup 0.8 --cutmix 1.0 --smoothing 0.1`): one draw
 * per batch decides between mixup and CutMix and gives λ; every image is mixed with the image at
 * the mirrored position of the batch (`x.flip(0)`), and the targets are the label-smoothed one-hot
 * rows mixed the same way, for a soft-target cross-entropy.
 *
 * The draw ({@link Mixup.draw}) is separate from its application ({@link applyMixup}), so a test
 * can apply fixed draws.
 *
 * ```ts
 * import { Mixup } from "./mixup.ts";
 * import { Rng } from "../runtime/rng.ts";
 * const mixup = new Mixup({
 *   mixupAlpha: 0.8, cutmixAlpha: 1.0, prob: 1.0, switchProb: 0.5,
 *   labelSmoothing: 0.1, numClasses: 10,
 * });
 * const images = new Float32Array(4 * 3 * 32 * 32);
 * const labels = Int32Array.from([0, 1, 2, 3]);
 * const { targets } = mixup.mix(images, labels, 4, 32, new Rng(0)); // [4, 10]
 * ```
 *
 * @module
 */

import type { Rng } from "../runtime/rng.ts";

/** The settings of {@link Mixup}, named as timm's arguments. */
export interface MixupOptions {
  /** α of mixup's Beta(α, α); mixup is active when > 0 (official 0.8). */
  mixupAlpha: number;
  /** α of CutMix's Beta(α, α); CutMix is active when > 0 (official 1.0). */
  cutmixAlpha: number;
  /** Probability of mixing a batch at all (official 1.0). */
  prob: number;
  /** Probability of CutMix rather than mixup when both are active (official 0.5). */
  switchProb: number;
  /** Label smoothing ε folded into the targets (official 0.1). */
  labelSmoothing: number;
  /** Number of classes C, the width of the targets. */
  numClasses: number;
}

/** A CutMix box in pixels, rows [top, bottom) and columns [left, right), clipped to the image. */
export interface CutmixBox {
  /** First row. */
  top: number;
  /** One past the last row. */
  bottom: number;
  /** First column. */
  left: number;
  /** One past the last column. */
  right: number;
}

/**
 * One batch's draw: λ, the weight of each image itself (1 means no mixing), and the CutMix box
 * when the batch is cut-mixed (λ then already corrected to 1 − box area / image area).
 */
export interface MixupDraw {
  /** Weight of the image itself in [0, 1]; 1 − λ goes to its mirror in the batch. */
  lam: number;
  /** The pasted box for CutMix, or null for mixup (or no mixing). */
  box: CutmixBox | null;
}

/** A mixed batch. */
export interface MixedBatch {
  /** [B, 3, S, S] mixed images (a new array). */
  images: Float32Array;
  /** [B, numClasses] soft targets, each row summing to 1. */
  targets: Float32Array;
  /** The λ used (after the CutMix area correction). */
  lam: number;
}

/** timm's `Mixup` in 'batch' mode, with its λ correction for clipped CutMix boxes. */
export class Mixup {
  /** The settings. */
  readonly options: Readonly<MixupOptions>;

  /** Checks the settings; throws one sentence naming the first one out of range. */
  constructor(options: MixupOptions) {
    const { mixupAlpha, cutmixAlpha, prob, switchProb, labelSmoothing, numClasses } = options;
    if (!(mixupAlpha >= 0) || !(cutmixAlpha >= 0) || mixupAlpha + cutmixAlpha <= 0) {
      throw new Error(
        `Mixup needs mixupAlpha ≥ 0 and cutmixAlpha ≥ 0, one of them > 0, got ${mixupAlpha} ` +
          `and ${cutmixAlpha}`,
      );
    }
    for (const [name, value] of [["prob", prob], ["switchProb", switchProb]] as const) {
      if (!(value >= 0 && value <= 1)) {
        throw new Error(`Mixup ${name} must be in [0, 1], got ${value}`);
      }
    }
    if (!(labelSmoothing >= 0 && labelSmoothing < 1)) {
      throw new Error(`Mixup labelSmoothing must be in [0, 1), got ${labelSmoothing}`);
    }
    if (!Number.isInteger(numClasses) || numClasses < 1) {
      throw new Error(`Mixup numClasses must be a positive integer, got ${numClasses}`);
    }
    this.options = options;
  }

  /**
   * Draws one batch's mixing for `height` × `width` images, in timm's order: mix at all
   * (`u < prob`), then CutMix or not (`u < switchProb`, when both are active), then λ from the
   * chosen Beta; for CutMix the box centre (row, then column, uniform over the pixels), with λ
   * corrected by the clipped box's area.
   */
  draw(height: number, width: number, rng: Rng): MixupDraw {
    const { mixupAlpha, cutmixAlpha, prob, switchProb } = this.options;
    if (!(rng.uniform() < prob)) return { lam: 1, box: null };
    let cutmix = false;
    if (mixupAlpha > 0 && cutmixAlpha > 0) cutmix = rng.uniform() < switchProb;
    else cutmix = cutmixAlpha > 0;
    const alpha = cutmix ? cutmixAlpha : mixupAlpha;
    const lam = sampleBeta(alpha, alpha, rng);
    if (!cutmix) return { lam, box: null };
    return cutmixDraw(height, width, lam, rng.int(height), rng.int(width));
  }

  /**
   * Mixes a batch of `batch` images [B, 3, size, size] and their labels [B]: a new draw from
   * `rng`, then {@link applyMixup}. `batch` must be even, as timm requires.
   */
  mix(
    images: Float32Array,
    labels: Int32Array,
    batch: number,
    size: number,
    rng: Rng,
  ): MixedBatch {
    checkBatch(images, labels, batch, size, size);
    return applyMixup(images, labels, batch, size, size, this.draw(size, size, rng), this.options);
  }
}

/**
 * The CutMix draw for a Beta draw `lam` and a box centre: the box of {@link cutmixBox} and λ
 * corrected to 1 − box area / image area (timm's `correct_lam`).
 */
export function cutmixDraw(
  height: number,
  width: number,
  lam: number,
  centerRow: number,
  centerColumn: number,
): MixupDraw {
  const box = cutmixBox(height, width, lam, centerRow, centerColumn);
  const area = (box.bottom - box.top) * (box.right - box.left);
  return { lam: 1 - area / (height * width), box };
}

/**
 * The CutMix box of timm's `rand_bbox` for λ and a centre (`centerRow`, `centerColumn`): sides
 * ⌊H·√(1 − λ)⌋ and ⌊W·√(1 − λ)⌋, half of each (rounded down) on either side of the centre,
 * clipped to the image.
 */
export function cutmixBox(
  height: number,
  width: number,
  lam: number,
  centerRow: number,
  centerColumn: number,
): CutmixBox {
  const ratio = Math.sqrt(1 - lam);
  const halfHeight = Math.floor(Math.trunc(height * ratio) / 2);
  const halfWidth = Math.floor(Math.trunc(width * ratio) / 2);
  const clip = (value: number, limit: number) => Math.min(limit, Math.max(0, value));
  return {
    top: clip(centerRow - halfHeight, height),
    bottom: clip(centerRow + halfHeight, height),
    left: clip(centerColumn - halfWidth, width),
    right: clip(centerColumn + halfWidth, width),
  };
}

/**
 * Applies a draw to a batch [B, C, H, W] (any C): with a box, image b takes the box's pixels
 * from image B − 1 − b; otherwise image b becomes λ·x_b + (1 − λ)·x_{B−1−b} (float32 products,
 * as PyTorch computes them). The targets are {@link smoothedOneHot} rows mixed the same way.
 * Returns new arrays; `batch` must be even.
 */
export function applyMixup(
  images: Float32Array,
  labels: Int32Array,
  batch: number,
  height: number,
  width: number,
  draw: MixupDraw,
  options: Pick<MixupOptions, "labelSmoothing" | "numClasses">,
): MixedBatch {
  checkBatch(images, labels, batch, height, width);
  const { lam, box } = draw;
  const per = images.length / batch;
  const channels = per / (height * width);
  const out = new Float32Array(images);
  if (box) {
    for (let b = 0; b < batch; b++) {
      const from = (batch - 1 - b) * per;
      for (let c = 0; c < channels; c++) {
        for (let y = box.top; y < box.bottom; y++) {
          const row = c * height * width + y * width;
          const start = row + box.left;
          const end = row + box.right;
          out.set(images.subarray(from + start, from + end), b * per + start);
        }
      }
    }
  } else if (lam !== 1) {
    const own = Math.fround(lam);
    const other = Math.fround(1 - lam);
    for (let b = 0; b < batch; b++) {
      const from = (batch - 1 - b) * per;
      for (let i = 0; i < per; i++) {
        out[b * per + i] = Math.fround(images[b * per + i] * own) +
          Math.fround(images[from + i] * other);
      }
    }
  }
  return { images: out, targets: mixedTargets(labels, batch, lam, options), lam };
}

/**
 * Label-smoothed one-hot targets [B, numClasses]: `smoothing / numClasses` off the label and
 * `1 − smoothing + smoothing / numClasses` on it (timm's `mixup_target` with λ = 1).
 */
export function smoothedOneHot(
  labels: Int32Array,
  numClasses: number,
  smoothing: number,
): Float32Array {
  const off = smoothing / numClasses;
  const on = 1 - smoothing + off;
  const out = new Float32Array(labels.length * numClasses).fill(off);
  labels.forEach((label, b) => {
    if (!Number.isInteger(label) || label < 0 || label >= numClasses) {
      throw new Error(`label ${label} of row ${b} is outside [0, ${numClasses})`);
    }
    out[b * numClasses + label] = on;
  });
  return out;
}

/** λ·onehot(y_b) + (1 − λ)·onehot(y_{B−1−b}), smoothed, in float32 as PyTorch computes it. */
function mixedTargets(
  labels: Int32Array,
  batch: number,
  lam: number,
  options: Pick<MixupOptions, "labelSmoothing" | "numClasses">,
): Float32Array {
  const { labelSmoothing, numClasses } = options;
  const own = smoothedOneHot(labels, numClasses, labelSmoothing);
  const weight = Math.fround(lam);
  const otherWeight = Math.fround(1 - lam);
  const out = new Float32Array(own.length);
  for (let b = 0; b < batch; b++) {
    const from = (batch - 1 - b) * numClasses;
    for (let k = 0; k < numClasses; k++) {
      out[b * numClasses + k] = Math.fround(own[b * numClasses + k] * weight) +
        Math.fround(own[from + k] * otherWeight);
    }
  }
  return out;
}

/**
 * A Beta(α, β) draw, X / (X + Y) with X ~ Gamma(α) and Y ~ Gamma(β) from {@link sampleGamma}.
 */
export function sampleBeta(alpha: number, beta: number, rng: Rng): number {
  const x = sampleGamma(alpha, rng);
  const y = sampleGamma(beta, rng);
  return x / (x + y);
}

/**
 * A Gamma(shape, 1) draw by Marsaglia and Tsang's method (2000); for shape < 1, a Gamma(shape + 1)
 * draw times U^(1/shape).
 */
export function sampleGamma(shape: number, rng: Rng): number {
  if (!(shape > 0 && Number.isFinite(shape))) {
    throw new Error(`a Gamma shape must be a positive number, got ${shape}`);
  }
  if (shape < 1) {
    return sampleGamma(shape + 1, rng) * Math.pow(1 - rng.uniform(), 1 / shape);
  }
  const d = shape - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number;
    let v: number;
    do {
      x = rng.normal();
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = 1 - rng.uniform();
    if (u < 1 - 0.0331 * x ** 4) return d * v;
    if (Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v;
  }
}

function checkBatch(
  images: Float32Array,
  labels: Int32Array,
  batch: number,
  height: number,
  width: number,
): void {
  if (!Number.isInteger(batch) || batch < 2 || batch % 2 !== 0) {
    throw new Error(`mixup needs an even batch of at least 2 images, got ${batch}`);
  }
  if (labels.length !== batch) {
    throw new Error(`mixup got ${labels.length} labels for a batch of ${batch}`);
  }
  const plane = height * width;
  if (images.length === 0 || images.length % (batch * plane) !== 0) {
    throw new Error(
      `mixup got ${images.length} image values, not a multiple of ${batch} × C × ${height} × ` +
        `${width}`,
    );
  }
}
