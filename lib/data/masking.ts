/**
 * iBOT's mask generation on the host (`loader.py: ImageFolderMask`): one masking ratio per crop
 * (`get_pred_ratio`), then either BEiT-style blockwise masking or uniformly random cells on the
 * crop's patch grid. Every random draw comes from the caller's {@link Rng}, in the order the
 * official code draws from Python's `random`.
 *
 * @module
 */

import type { Rng } from "../runtime/rng.ts";

/** Masking settings, as the `--pred_*` command-line arguments of `main_ibot.py`. */
export interface MaskingConfig {
  /** Masking ratio (fraction of grid cells, 0–1); a list means one entry is chosen per crop. */
  readonly predRatio: number | readonly number[];
  /** Half-width of the uniform jitter around each ratio (fraction of cells); matches `predRatio`. */
  readonly predRatioVar: number | readonly number[];
  /** `block`: BEiT blockwise masking; `rand`: uniformly random cells. */
  readonly predShape: "block" | "rand";
  /** First epoch (0-based) with masking; earlier epochs get all-zero masks. */
  readonly predStartEpoch: number;
  /** Range of block aspect ratios (height / width), default [0.3, 1/0.3]. */
  readonly predAspectRatio?: readonly [number, number];
}

/** Blocks tried per round before blockwise masking stops (the official code's 10 attempts). */
const BLOCK_ATTEMPTS = 10;

/** Python's `round` on a non-negative float: to the nearest integer, ties to even. */
function roundHalfEven(x: number): number {
  const floor = Math.floor(x);
  const fraction = x - floor;
  if (fraction > 0.5) return floor + 1;
  if (fraction < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** Python's `random.randint(low, high)`: a uniform integer in [low, high], both ends included. */
function randint(rng: Rng, low: number, high: number): number {
  return low + rng.int(high - low + 1);
}

/** One ratio setting as a list: a scalar becomes a one-entry list; a one-entry list stays one. */
function asList(value: number | readonly number[]): number[] {
  return typeof value === "number" ? [value] : [...value];
}

/**
 * Draws iBOT masks: {@link MaskGenerator.ratio} picks a crop's masking ratio and
 * {@link MaskGenerator.draw} turns it into a mask on the crop's patch grid.
 */
export class MaskGenerator {
  readonly #ratios: number[];
  readonly #vars: number[];
  readonly #shape: "block" | "rand";
  readonly #startEpoch: number;
  readonly #logAspect: readonly [number, number];

  /**
   * Normalises the settings like `ImageFolderMask`'s constructor: one-entry lists become
   * scalars, and a scalar variance next to a list of ratios is used for every ratio.
   */
  constructor(config: MaskingConfig) {
    const ratios = asList(config.predRatio);
    let vars = asList(config.predRatioVar);
    if (ratios.length === 0) {
      throw new Error("MaskingConfig.predRatio needs at least one ratio, got an empty list");
    }
    if (ratios.length > 1 && vars.length === 1) vars = ratios.map(() => vars[0]);
    if (vars.length !== ratios.length) {
      throw new Error(
        `MaskingConfig.predRatioVar needs one entry per ratio (${ratios.length}), got ${vars.length}`,
      );
    }
    for (let i = 0; i < ratios.length; i++) {
      const [ratio, variance] = [ratios[i], vars[i]];
      if (!(variance >= 0 && ratio + variance <= 1)) {
        throw new Error(
          `MaskingConfig needs ratio ± variance within [0, 1], got ${ratio} ± ${variance}`,
        );
      }
      if (ratio < variance) {
        throw new Error(`MaskingConfig.predRatio ${ratio} is below its variance ${variance}`);
      }
    }
    if (config.predShape !== "block" && config.predShape !== "rand") {
      throw new Error(`MaskingConfig.predShape must be "block" or "rand", got ${config.predShape}`);
    }
    if (!Number.isInteger(config.predStartEpoch) || config.predStartEpoch < 0) {
      throw new Error(
        `MaskingConfig.predStartEpoch must be a non-negative integer, got ${config.predStartEpoch}`,
      );
    }
    const [aspectLow, aspectHigh] = config.predAspectRatio ?? [0.3, 1 / 0.3];
    if (!(aspectLow > 0 && aspectHigh > 0 && Number.isFinite(aspectLow * aspectHigh))) {
      throw new Error(
        `MaskingConfig.predAspectRatio needs two positive numbers, got [${aspectLow}, ${aspectHigh}]`,
      );
    }
    this.#ratios = ratios;
    this.#vars = vars;
    this.#shape = config.predShape;
    this.#startEpoch = config.predStartEpoch;
    this.#logAspect = [Math.log(aspectLow), Math.log(aspectHigh)];
  }

  /**
   * The masking ratio (fraction of cells) for one crop at `epoch` (`get_pred_ratio`): 0 before
   * `predStartEpoch`; otherwise each entry gives U(ratio − var, ratio + var), or the ratio itself
   * when var is 0, and a list picks one of those candidates uniformly.
   */
  ratio(epoch: number, rng: Rng): number {
    if (epoch < this.#startEpoch) return 0;
    const candidates = this.#ratios.map((ratio, i) => {
      const variance = this.#vars[i];
      return variance > 0 ? rng.uniformRange(ratio - variance, ratio + variance) : ratio;
    });
    if (candidates.length === 1) return candidates[0];
    return candidates[rng.int(candidates.length)];
  }

  /**
   * One crop's mask on a `height` × `width` patch grid at `epoch`: row-major, 1 = masked. The
   * ratio is drawn first ({@link MaskGenerator.ratio}); the masked count never exceeds
   * floor(ratio · height · width).
   */
  draw(height: number, width: number, epoch: number, rng: Rng): Uint8Array {
    checkGrid(height, width);
    const high = this.ratio(epoch, rng) * height * width;
    return this.#shape === "block"
      ? this.#drawBlocks(height, width, high, rng)
      : drawRandom(height, width, high, rng);
  }

  /**
   * An upper bound on the masked cell count of any {@link MaskGenerator.draw} on a
   * `height` × `width` grid at any epoch: floor(max over entries of (ratio + var) · height · width).
   */
  maxMasked(height: number, width: number): number {
    checkGrid(height, width);
    const maxRatio = Math.max(...this.#ratios.map((ratio, i) => ratio + this.#vars[i]));
    return Math.floor(maxRatio * height * width);
  }

  /**
   * Blockwise masking (BEiT's `MaskingGenerator` as adapted by iBOT) with a float budget of
   * `high` cells: rounds of up to 10 random rectangles, each accepted only if it adds between 1
   * and the remaining budget of new cells; the first round without an accepted block ends it.
   */
  #drawBlocks(height: number, width: number, high: number, rng: Rng): Uint8Array {
    const mask = new Uint8Array(height * width);
    const minArea = Math.floor(Math.min(height, width) / 3) ** 2;
    let count = 0;
    while (count < high) {
      const remaining = high - count;
      let added = 0;
      for (let attempt = 0; attempt < BLOCK_ATTEMPTS && added === 0; attempt++) {
        const area = rng.uniformRange(minArea, remaining);
        const aspect = Math.exp(rng.uniformRange(this.#logAspect[0], this.#logAspect[1]));
        const h = roundHalfEven(Math.sqrt(area * aspect));
        const w = roundHalfEven(Math.sqrt(area / aspect));
        if (w < width && h < height) {
          const top = randint(rng, 0, height - h);
          const left = randint(rng, 0, width - w);
          const fresh = countUnmasked(mask, width, top, left, h, w);
          if (fresh > 0 && fresh <= remaining) {
            fillRectangle(mask, width, top, left, h, w);
            added = fresh;
          }
        }
      }
      if (added === 0) break;
      count += added;
    }
    return mask;
  }
}

/** Throws unless the grid size is two positive integers. */
function checkGrid(height: number, width: number): void {
  if (!Number.isInteger(height) || !Number.isInteger(width) || height < 1 || width < 1) {
    throw new Error(`A mask grid needs positive integer sides, got ${height} × ${width}`);
  }
}

/** The number of unmasked cells in the `h` × `w` rectangle at (`top`, `left`). */
function countUnmasked(
  mask: Uint8Array,
  width: number,
  top: number,
  left: number,
  h: number,
  w: number,
): number {
  let fresh = 0;
  for (let i = top; i < top + h; i++) {
    for (let j = left; j < left + w; j++) {
      if (mask[i * width + j] === 0) fresh++;
    }
  }
  return fresh;
}

/** Masks every cell of the `h` × `w` rectangle at (`top`, `left`). */
function fillRectangle(
  mask: Uint8Array,
  width: number,
  top: number,
  left: number,
  h: number,
  w: number,
): void {
  for (let i = top; i < top + h; i++) {
    mask.fill(1, i * width + left, i * width + left + w);
  }
}

/**
 * Random masking: exactly floor(`high`) masked cells, placed by a uniform random permutation
 * (Fisher–Yates) of a vector holding that many ones followed by zeros.
 */
function drawRandom(height: number, width: number, high: number, rng: Rng): Uint8Array {
  const mask = new Uint8Array(height * width);
  mask.fill(1, 0, Math.floor(high));
  for (let i = mask.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [mask[i], mask[j]] = [mask[j], mask[i]];
  }
  return mask;
}

/** The row-major indices of the masked cells (value 1) of a mask, in increasing order. */
export function maskedPositions(mask: Uint8Array): number[] {
  const positions: number[] = [];
  for (let i = 0; i < mask.length; i++) {
    if (mask[i] !== 0) positions.push(i);
  }
  return positions;
}
