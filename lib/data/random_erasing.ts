/**
 * Random erasing (Zhong et al. 2017) as timm's `RandomErasing` applies it in the official
 * fine-tuning (`--reprob 0.25 --remode pixel --recount 1`): on the normalised CHW tensor, with
 * probability p one rectangle of 2%–33% of the image area and log-uniform aspect ratio in
 * [0.3, 1/0.3] (up to 10 attempts to fit) is replaced by standard normal noise, one value per
 * pixel and channel.
 *
 * {@link drawRandomErasing} draws the rectangle and its noise; {@link applyRandomErasing} writes
 * them, so a test can apply fixed draws.
 *
 * ```ts
 * import { applyRandomErasing, drawRandomErasing } from "./random_erasing.ts";
 * import { Rng } from "../runtime/rng.ts";
 * const image = new Float32Array(3 * 32 * 32);
 * const plan = drawRandomErasing(3, 32, 32, new Rng(0), { probability: 1 });
 * if (plan) applyRandomErasing(image, 3, 32, 32, plan);
 * ```
 *
 * @module
 */

import type { Rng } from "../runtime/rng.ts";
import { roundHalfEven } from "./augment.ts";

/** timm's `RandomErasing` settings (mode 'pixel', one box). */
export interface RandomErasingOptions {
  /** Probability of erasing an image (official `--reprob` 0.25). */
  probability: number;
  /** Smallest fraction of the image area erased (0.02). */
  minArea: number;
  /** Largest fraction of the image area erased (1/3). */
  maxArea: number;
  /** Smallest aspect ratio, height / width (0.3); the largest is its inverse. */
  minAspect: number;
}

/** The official settings: p 0.25, area 0.02–1/3, aspect 0.3–3.33. */
export const DEFAULT_RANDOM_ERASING: Readonly<RandomErasingOptions> = {
  probability: 0.25,
  minArea: 0.02,
  maxArea: 1 / 3,
  minAspect: 0.3,
};

/** One erasure: a rectangle in pixels and its noise. */
export interface RandomErasingPlan {
  /** First row. */
  top: number;
  /** First column. */
  left: number;
  /** Rows erased. */
  height: number;
  /** Columns erased. */
  width: number;
  /** [C, height, width] standard normal values written into the rectangle. */
  noise: Float32Array;
}

const ATTEMPTS = 10;

/**
 * Draws one image's erasure for a [channels, height, width] tensor, in timm's order: erase at all
 * (`u ≤ p`), then up to 10 attempts of (area fraction U(minArea, maxArea), log aspect ratio
 * uniform), sides `round(√(area·ratio))` rows by `round(√(area/ratio))` columns, kept when
 * smaller than the image in both directions; then the top row and left column (uniform,
 * inclusive) and the C·h·w noise values. Null when the image is not erased or no attempt fits.
 */
export function drawRandomErasing(
  channels: number,
  height: number,
  width: number,
  rng: Rng,
  options: Partial<RandomErasingOptions> = {},
): RandomErasingPlan | null {
  const { probability, minArea, maxArea, minAspect } = { ...DEFAULT_RANDOM_ERASING, ...options };
  if (!(minArea > 0 && minArea <= maxArea && maxArea <= 1) || !(minAspect > 0)) {
    throw new Error(
      `random erasing needs 0 < minArea ≤ maxArea ≤ 1 and minAspect > 0, got area ` +
        `[${minArea}, ${maxArea}] and minAspect ${minAspect}`,
    );
  }
  if (rng.uniform() > probability) return null;
  const area = height * width;
  const logAspect = [Math.log(minAspect), Math.log(1 / minAspect)];
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    const targetArea = rng.uniformRange(minArea, maxArea) * area;
    const aspect = Math.exp(rng.uniformRange(logAspect[0], logAspect[1]));
    const h = roundHalfEven(Math.sqrt(targetArea * aspect));
    const w = roundHalfEven(Math.sqrt(targetArea / aspect));
    if (w < width && h < height) {
      const top = rng.int(height - h + 1);
      const left = rng.int(width - w + 1);
      const noise = Float32Array.from({ length: channels * h * w }, () => rng.normal());
      return { top, left, height: h, width: w, noise };
    }
  }
  return null;
}

/** Writes a plan's noise into its rectangle of a [channels, height, width] tensor, in place. */
export function applyRandomErasing(
  image: Float32Array,
  channels: number,
  height: number,
  width: number,
  plan: RandomErasingPlan,
): void {
  if (image.length !== channels * height * width) {
    throw new Error(
      `random erasing got ${image.length} values for a ${channels}×${height}×${width} image`,
    );
  }
  if (plan.top + plan.height > height || plan.left + plan.width > width) {
    throw new Error(
      `the erased box ${plan.height}×${plan.width} at (${plan.top}, ${plan.left}) does not fit ` +
        `a ${height}×${width} image`,
    );
  }
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < plan.height; y++) {
      const from = (c * plan.height + y) * plan.width;
      const to = c * height * width + (plan.top + y) * width + plan.left;
      image.set(plan.noise.subarray(from, from + plan.width), to);
    }
  }
}
