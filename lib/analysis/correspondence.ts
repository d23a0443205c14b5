/**
 * Sparse patch correspondences (official `analysis/correspondence/visualize_correspondence.py`):
 * each patch of view 1 is matched to the view-2 patch whose final-normed token has the largest
 * dot product with its own, and the `topk` view-1 patches the model attends to most are drawn as
 * red lines between the two views, side by side.
 *
 * - Instance mode: two augmented views of one image ({@link instanceView}). Their crop boxes give
 *   every patch centre in original-image coordinates ({@link patchCentres}), hence which view-1
 *   patches the other view also covers ({@link overlapMask}) and the true match of each, the view-2
 *   patch with the nearest centre ({@link groundTruthMatches}); {@link matchAccuracy} counts the
 *   overlapping patches matched within a radius of the truth.
 * - Class mode: two images of one class ({@link classBatches}, {@link resizeView}).
 *
 * Unlike the official script, which downloads a DINO ViT-B/8 only to choose the patches to draw,
 * the patches are chosen by the evaluated model itself on view 1: a ViT's last-block CLS
 * attention ({@link meanClsAttention}); a Swin, which has no CLS token, by each last-stage token's
 * dot product with their average, the token its head uses as CLS ({@link pooledSimilarity}).
 * A Swin's patches are its last-stage tokens, 32 pixels a side. Patch indices are row-major over
 * a square `grid` × `grid` patch grid.
 *
 * ```ts
 * // One image's tokens [1 + N, D] and attention [heads, 1 + N, 1 + N] from a BackboneRunner run.
 * const pair = correspondPair({
 *   tokens1, tokens2, scores1: meanClsAttention(attention, 3, 17), grid: 4, dim: 96, topk: 5,
 * });
 * const to = pair.chosen.map((p) => pair.matches.index[p]);
 * const picture = drawCorrespondences(view1, view2, pair.chosen, to, 4, 8); // 8-pixel patches,
 * // each 32-pixel view enlarged 7 times to 224 pixels
 * ```
 *
 * @module
 */

import { clsAttention } from "./attention.ts";
import sharp from "sharp";
import {
  colorJitter,
  cropAndResize,
  type CropBox,
  drawCropPlan,
  flipHorizontal,
  grayscale,
  normalize,
} from "../data/augment.ts";
import type { RawImage } from "../data/source.ts";
import type { BackboneRun, BackboneRunner } from "./backbone_runner.ts";
import type { Rng } from "../runtime/rng.ts";
import { drawLine, RED } from "./draw.ts";
import { enlargePicture, READABLE_PANEL_SIZE, readableScale, sideBySide } from "./picture.ts";

/**
 * A view's crop box in original-image-normalised coordinates (0 = top or left edge, 1 = bottom or
 * right edge), the official `corner`; `left` and `right` are swapped when the view was flipped, so
 * that `left` is always the original-image column at the view's left edge.
 */
export interface ViewBox {
  /** Original-image row (0–1) at the view's top edge. */
  readonly top: number;
  /** Original-image column (0–1) at the view's left edge. */
  readonly left: number;
  /** Original-image row (0–1) at the view's bottom edge. */
  readonly bottom: number;
  /** Original-image column (0–1) at the view's right edge. */
  readonly right: number;
}

/** The {@link ViewBox} of a crop `box` (pixels) of a `width` × `height` image. */
export function viewBox(box: CropBox, width: number, height: number, flipped: boolean): ViewBox {
  const left = box.left / width;
  const right = (box.left + box.width) / width;
  return {
    top: box.top / height,
    bottom: (box.top + box.height) / height,
    left: flipped ? right : left,
    right: flipped ? left : right,
  };
}

/**
 * The centres of a view's `grid` × `grid` patches in original-image-normalised coordinates:
 * [N, 2] as (row, column) pairs, N = grid², row-major. Patch i of a side spans the fraction
 * (2i + 1) / (2·grid) of the box (numpy `linspace(a, b, 2·grid + 1)[1::2]`).
 */
export function patchCentres(box: ViewBox, grid: number): Float64Array {
  const rowStep = (box.bottom - box.top) / (2 * grid);
  const colStep = (box.right - box.left) / (2 * grid);
  const out = new Float64Array(2 * grid * grid);
  for (let r = 0; r < grid; r++) {
    for (let c = 0; c < grid; c++) {
      out[2 * (r * grid + c)] = (2 * r + 1) * rowStep + box.top;
      out[2 * (r * grid + c) + 1] = (2 * c + 1) * colStep + box.left;
    }
  }
  return out;
}

/**
 * Which view-1 patches view 2 also shows (1) or not (0): a patch overlaps when its centre, widened
 * by eps = ⌊patchSize / 2⌋ / imageSize on both sides, reaches inside the box spanned by the view-2
 * patch centres, in both coordinates (the official `ovlp`). Centres as {@link patchCentres}.
 */
export function overlapMask(
  centres1: Float64Array,
  centres2: Float64Array,
  patchSize: number,
  imageSize: number,
): Uint8Array {
  const eps = Math.floor(patchSize / 2) / imageSize;
  const low = [Infinity, Infinity];
  const high = [-Infinity, -Infinity];
  for (let q = 0; q < centres2.length; q++) {
    low[q % 2] = Math.min(low[q % 2], centres2[q]);
    high[q % 2] = Math.max(high[q % 2], centres2[q]);
  }
  const n = centres1.length / 2;
  const out = new Uint8Array(n);
  for (let p = 0; p < n; p++) {
    let inside = true;
    for (let d = 0; d < 2; d++) {
      const v = centres1[2 * p + d];
      inside &&= v + eps > low[d] && v - eps < high[d];
    }
    out[p] = inside ? 1 : 0;
  }
  return out;
}

/**
 * The true match of each view-1 patch: the view-2 patch whose centre is nearest (Euclidean; the
 * lowest index on ties). Centres as {@link patchCentres}; returns N₁ indices.
 */
export function groundTruthMatches(centres1: Float64Array, centres2: Float64Array): Int32Array {
  const n1 = centres1.length / 2;
  const n2 = centres2.length / 2;
  const out = new Int32Array(n1);
  for (let p = 0; p < n1; p++) {
    let best = Infinity;
    for (let q = 0; q < n2; q++) {
      const dr = centres1[2 * p] - centres2[2 * q];
      const dc = centres1[2 * p + 1] - centres2[2 * q + 1];
      const distance = dr * dr + dc * dc;
      if (distance < best) {
        best = distance;
        out[p] = q;
      }
    }
  }
  return out;
}

/** The best view-2 patch of each view-1 patch. */
export interface PatchMatches {
  /** N₁ view-2 patch indices. */
  readonly index: Int32Array;
  /** N₁ similarities x1[p]·x2[index[p]]. */
  readonly value: Float32Array;
}

/**
 * For each of the `n1` tokens x1 [n1, dim], the argmax over the `n2` tokens x2 [n2, dim] of the
 * plain dot product x1·x2ᵀ (the tokens are final-normed but not L2-normalised, as officially), and
 * that largest value; the lowest index wins ties.
 */
export function matchPatches(
  x1: Float32Array,
  x2: Float32Array,
  n1: number,
  n2: number,
  dim: number,
): PatchMatches {
  if (x1.length !== n1 * dim || x2.length !== n2 * dim) {
    throw new Error(
      `matchPatches: expected ${n1}×${dim} and ${n2}×${dim} values, ` +
        `got ${x1.length} and ${x2.length}`,
    );
  }
  const index = new Int32Array(n1);
  const value = new Float32Array(n1);
  for (let p = 0; p < n1; p++) {
    let best = -Infinity;
    for (let q = 0; q < n2; q++) {
      let dot = 0;
      for (let k = 0; k < dim; k++) dot += x1[p * dim + k] * x2[q * dim + k];
      if (dot > best) {
        best = dot;
        index[p] = q;
      }
    }
    value[p] = best;
  }
  return { index, value };
}

/** The tally of {@link matchAccuracy}; accuracy = correct / overlapping. */
export interface MatchCount {
  /** Overlapping view-1 patches matched within the radius of the truth. */
  readonly correct: number;
  /** View-1 patches that overlap view 2. */
  readonly overlapping: number;
}

/**
 * Counts the overlapping view-1 patches whose `predicted` view-2 patch lies within `radius` grid
 * cells of the `truth`, in both row and column (radius 0: exactly the truth), on a `grid` × `grid`
 * grid (the official accuracy). `overlap` is {@link overlapMask}.
 */
export function matchAccuracy(
  predicted: Int32Array,
  truth: Int32Array,
  overlap: Uint8Array,
  grid: number,
  radius: number,
): MatchCount {
  let correct = 0;
  let overlapping = 0;
  for (let p = 0; p < overlap.length; p++) {
    if (!overlap[p]) continue;
    overlapping++;
    const rowOff = Math.abs(Math.floor(predicted[p] / grid) - Math.floor(truth[p] / grid));
    const colOff = Math.abs((predicted[p] % grid) - (truth[p] % grid));
    if (rowOff <= radius && colOff <= radius) correct++;
  }
  return { correct, overlapping };
}

/**
 * The CLS token's attention to each patch, averaged over heads: from one image's last-block
 * attention [heads, T, T] (T = 1 + N), the mean over heads of row 0, columns 1…N. Returns N values.
 */
export function meanClsAttention(
  attention: Float32Array,
  heads: number,
  tokens: number,
): Float32Array {
  const patches = tokens - 1;
  const maps = clsAttention(attention, heads, tokens, [1, patches]);
  const out = new Float32Array(patches);
  for (let h = 0; h < heads; h++) {
    for (let p = 0; p < patches; p++) out[p] += maps[h * patches + p] / heads;
  }
  return out;
}

/**
 * Each patch token's dot product with the average-pooled token a Swin's head uses as CLS: from
 * one image's tokens [1 + N, dim] (the pooled token first), N values.
 */
export function pooledSimilarity(tokens: Float32Array, patches: number, dim: number): Float32Array {
  const out = new Float32Array(patches);
  for (let p = 0; p < patches; p++) {
    let dot = 0;
    for (let d = 0; d < dim; d++) dot += tokens[d] * tokens[(1 + p) * dim + d];
    out[p] = dot;
  }
  return out;
}

/** The indices of the `k` largest `scores`, largest first (the lower index first on ties). */
export function topPatches(scores: ArrayLike<number>, k: number): number[] {
  const order = Array.from({ length: scores.length }, (_, i) => i);
  order.sort((a, b) => scores[b] - scores[a] || a - b);
  return order.slice(0, k);
}

/** What {@link correspondPair} needs about one pair of views. */
export interface PairInput {
  /** View 1's final-normed tokens [1 + N, dim], CLS first. */
  readonly tokens1: Float32Array;
  /** View 2's final-normed tokens [1 + N, dim], CLS first. */
  readonly tokens2: Float32Array;
  /**
   * How much the model attends to each of view 1's N patches, which ranks them for drawing
   * ({@link meanClsAttention} or {@link pooledSimilarity}).
   */
  readonly scores1: Float32Array;
  /** Patches per side (N = grid²). */
  readonly grid: number;
  /** Token width. */
  readonly dim: number;
  /** How many view-1 patches to choose for drawing. */
  readonly topk: number;
  /** Instance mode: the two views' boxes, for the overlap, the truth and the accuracy. */
  readonly instance?: {
    readonly box1: ViewBox;
    readonly box2: ViewBox;
    /** Pixels a patch token covers on each side. */
    readonly patchSize: number;
    /** View side in pixels. */
    readonly imageSize: number;
    /** Accuracy radius in grid cells. */
    readonly radius: number;
  };
}

/** What {@link correspondPair} finds. */
export interface PairResult {
  /** The best view-2 patch of every view-1 patch. */
  readonly matches: PatchMatches;
  /** The `topk` view-1 patches to draw, most attended first. */
  readonly chosen: number[];
  /** Instance mode: {@link overlapMask}. */
  readonly overlap?: Uint8Array;
  /** Instance mode: {@link groundTruthMatches}. */
  readonly truth?: Int32Array;
  /** Instance mode: {@link matchAccuracy}. */
  readonly count?: MatchCount;
}

/**
 * Matches the patches of one pair and chooses the patches to draw: the `topk` largest scores of
 * view 1, times the overlap mask in instance mode (as the official script weights its reference
 * attention).
 */
export function correspondPair(input: PairInput): PairResult {
  const { grid, dim } = input;
  const n = grid * grid;
  const patches = (tokens: Float32Array) => tokens.subarray(dim, (1 + n) * dim);
  const matches = matchPatches(patches(input.tokens1), patches(input.tokens2), n, n, dim);
  const scores = Float32Array.from(input.scores1);
  if (!input.instance) return { matches, chosen: topPatches(scores, input.topk) };
  const { box1, box2, patchSize, imageSize, radius } = input.instance;
  const centres1 = patchCentres(box1, grid);
  const centres2 = patchCentres(box2, grid);
  const overlap = overlapMask(centres1, centres2, patchSize, imageSize);
  const truth = groundTruthMatches(centres1, centres2);
  const count = matchAccuracy(matches.index, truth, overlap, grid, radius);
  for (let p = 0; p < n; p++) scores[p] *= overlap[p];
  return { matches, chosen: topPatches(scores, input.topk), overlap, truth, count };
}

/** Options of {@link drawCorrespondences}. */
export interface CorrespondencePictureOptions {
  /**
   * Each view is enlarged by the smallest integer factor that makes its shorter side at least this
   * many pixels (default {@link READABLE_PANEL_SIZE}; 0 keeps the views' size).
   */
  readonly panelSize?: number;
}

/**
 * The official picture: view 1 and view 2 side by side (no gap), each enlarged by nearest
 * neighbour by the factor k of {@link readableScale} (2·k·S × k·S for S × S views), then a
 * one-pixel red line from the centre of each view-1 patch in `from` to the centre of its match
 * `to[i]` in view 2. `grid` patches of `patchSize` pixels per side; patch (r, c) of a view is
 * centred at ((c + ½)·k·patchSize, (r + ½)·k·patchSize) of the enlarged view.
 */
export function drawCorrespondences(
  view1: RawImage,
  view2: RawImage,
  from: readonly number[],
  to: readonly number[],
  grid: number,
  patchSize: number,
  options: CorrespondencePictureOptions = {},
): RawImage {
  const scale = readableScale(
    view1.width,
    view1.height,
    options.panelSize ?? READABLE_PANEL_SIZE,
  );
  const left = enlargePicture(view1, scale);
  const picture = sideBySide([left, enlargePicture(view2, scale)]);
  const cell = patchSize * scale;
  const centre = (p: number) => [(p % grid + 0.5) * cell, (Math.floor(p / grid) + 0.5) * cell];
  for (let i = 0; i < from.length; i++) {
    const [x1, y1] = centre(from[i]);
    const [x2, y2] = centre(to[i]);
    drawLine(picture, x1, y1, x2 + left.width, y2, RED);
  }
  return picture;
}

/** One augmented view of instance mode: `size` × `size` HWC RGB pixels and its box. */
export interface InstanceView {
  /** HWC RGB bytes, size·size·3. */
  readonly pixels: Uint8Array;
  /** Where the view lies in the original image. */
  readonly box: ViewBox;
}

const INSTANCE_SCALE: readonly [number, number] = [0.4, 1];

/**
 * One instance-mode view (the official augmentation): RandomResizedCrop(size, scale (0.4, 1),
 * bicubic), horizontal flip (p 0.5), colour jitter (p 0.8), grayscale (p 0.2); no blur or
 * solarize. All draws come from `rng`, in that order.
 */
export async function instanceView(image: RawImage, size: number, rng: Rng): Promise<InstanceView> {
  const spec = { size, scale: INSTANCE_SCALE, blurProbability: 0, solarizeProbability: 0 };
  const plan = drawCropPlan(image.width, image.height, spec, rng);
  let pixels = await cropAndResize(image, plan.box, size);
  if (plan.flip) pixels = flipHorizontal(pixels, size, size);
  if (plan.jitter) pixels = colorJitter(pixels, plan.jitter);
  if (plan.grayscale) pixels = grayscale(pixels);
  return { pixels, box: viewBox(plan.box, image.width, image.height, plan.flip) };
}

/** A class-mode view: the image resized to `size` × `size` (bilinear, as `Resize((S, S))`). */
export async function resizeView(image: RawImage, size: number): Promise<Uint8Array> {
  const buffer = await sharp(image.data, {
    raw: { width: image.width, height: image.height, channels: 3 },
  }).resize(size, size, { fit: "fill", kernel: "linear" }).raw().toBuffer();
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

/** Instance-mode batches: a random permutation of `count` images cut into batches (last short). */
export function instanceBatches(count: number, batchSize: number, rng: Rng): number[][] {
  const order = Array.from({ length: count }, (_, i) => i);
  shuffle(order, rng);
  const batches: number[][] = [];
  for (let i = 0; i < count; i += batchSize) batches.push(order.slice(i, i + batchSize));
  return batches;
}

/**
 * Class-mode batches (the official batch sampler): the images of each class in dataset order,
 * cut into full batches of `batchSize` (a class's remainder is dropped), then the batches
 * shuffled. Image i of a batch is paired with image (i + 1) mod batchSize.
 */
export function classBatches(labels: readonly number[], batchSize: number, rng: Rng): number[][] {
  const byClass = new Map<number, number[]>();
  labels.forEach((label, i) => {
    const members = byClass.get(label);
    if (members) members.push(i);
    else byClass.set(label, [i]);
  });
  const batches: number[][] = [];
  for (const label of [...byClass.keys()].sort((a, b) => a - b)) {
    const members = byClass.get(label)!;
    for (let i = 0; i + batchSize <= members.length; i += batchSize) {
      batches.push(members.slice(i, i + batchSize));
    }
  }
  shuffle(batches, rng);
  return batches;
}

function shuffle<T>(items: T[], rng: Rng): void {
  for (let i = items.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [items[i], items[j]] = [items[j], items[i]];
  }
}

/** How {@link correspondBatch} draws and matches pairs. */
export interface CorrespondenceOptions {
  /** `instance`: two augmented views of each image; `class`: image i with image (i + 1) mod B. */
  readonly sampleType: "instance" | "class";
  /** View side in pixels (a multiple of the runner's patch size). */
  readonly size: number;
  /** View-1 patches to choose for drawing. */
  readonly topk: number;
  /** Instance mode: accuracy radius in grid cells. */
  readonly radius: number;
  /** Draws the instance views. */
  readonly rng: Rng;
}

/** One batch of pairs: the HWC RGB views (size × size) and each pair's matches. */
export interface CorrespondenceBatch {
  /** View 1 of each pair. */
  readonly views1: Uint8Array[];
  /** View 2 of each pair. */
  readonly views2: Uint8Array[];
  /** Pair b matches views1[b] against views2[b]. */
  readonly pairs: PairResult[];
  /** Instance mode: the match counts summed over the batch. */
  readonly count?: MatchCount;
}

/**
 * Draws the views of `images` (one pair per image), runs them through `runner` and matches every
 * pair ({@link correspondPair}). In class mode the images should share a class.
 */
export async function correspondBatch(
  runner: BackboneRunner,
  images: readonly RawImage[],
  options: CorrespondenceOptions,
): Promise<CorrespondenceBatch> {
  const { sampleType, size, topk, radius, rng } = options;
  const { patchSize, width: dim } = runner;
  const grid = size / patchSize;
  const views1: Uint8Array[] = [];
  const views2: Uint8Array[] = [];
  const boxes: [ViewBox, ViewBox][] = [];
  for (const image of images) {
    if (sampleType === "instance") {
      const first = await instanceView(image, size, rng);
      const second = await instanceView(image, size, rng);
      views1.push(first.pixels);
      views2.push(second.pixels);
      boxes.push([first.box, second.box]);
    } else {
      views1.push(await resizeView(image, size));
    }
  }
  if (sampleType === "class") views2.push(...views1.slice(1), views1[0]);
  const batch = images.length;
  const run1 = await runner.run(normalizedBatch(views1, size), batch, size, size);
  const run2 = sampleType === "instance"
    ? await runner.run(normalizedBatch(views2, size), batch, size, size)
    : undefined;
  const tokensPerImage = (1 + grid * grid) * dim;
  const pairs: PairResult[] = [];
  let correct = 0;
  let overlapping = 0;
  for (let b = 0; b < batch; b++) {
    const partner = sampleType === "instance" ? b : (b + 1) % batch;
    const pair = correspondPair({
      tokens1: run1.tokens.subarray(b * tokensPerImage, (b + 1) * tokensPerImage),
      tokens2: (run2 ?? run1).tokens.subarray(
        partner * tokensPerImage,
        (partner + 1) * tokensPerImage,
      ),
      scores1: patchScores(run1, b, batch, dim),
      grid,
      dim,
      topk,
      instance: sampleType === "instance"
        ? { box1: boxes[b][0], box2: boxes[b][1], patchSize, imageSize: size, radius }
        : undefined,
    });
    correct += pair.count?.correct ?? 0;
    overlapping += pair.count?.overlapping ?? 0;
    pairs.push(pair);
  }
  return {
    views1,
    views2,
    pairs,
    count: sampleType === "instance" ? { correct, overlapping } : undefined,
  };
}

/**
 * Image `b`'s scores of its patches in a run of `batch` images: a ViT's mean CLS attention, a
 * Swin's similarity to its pooled token.
 */
function patchScores(run: BackboneRun, b: number, batch: number, dim: number): Float32Array {
  const tokens = run.tokens.length / (batch * dim);
  const own = run.tokens.subarray(b * tokens * dim, (b + 1) * tokens * dim);
  if (!run.attention) return pooledSimilarity(own, tokens - 1, dim);
  const perImage = run.attention.length / batch;
  const heads = perImage / (tokens * tokens);
  return meanClsAttention(run.attention.subarray(b * perImage, (b + 1) * perImage), heads, tokens);
}

/** HWC RGB views of `size` × `size` as one normalised [B, 3, size, size] batch. */
function normalizedBatch(views: readonly Uint8Array[], size: number): Float32Array {
  const plane = 3 * size * size;
  const out = new Float32Array(views.length * plane);
  views.forEach((pixels, b) => out.set(normalize(pixels, size, size), b * plane));
  return out;
}
