/**
 * Semantic patterns (official `analysis/extract_pattern/extract_topk_cluster.py`, reference §7.3):
 * the iBOT head assigns every patch (`patch`) or every image (`cls`) to its argmax prototype; a
 * memory bank records, per patch or image, the max logit and the argmax prototype, and counts
 * each prototype's population. For the most populated prototypes, the best-scoring patch
 * neighbourhoods (or whole images) are pasted into a square grid picture, unsupervised "part
 * discovery" (patch) or clustering (cls). A Swin's patches are its last-stage tokens (32 pixels a
 * side) and its CLS the average of them, as its head sees them in pre-training.
 *
 * Every step is a function of its own so that a notebook can compose them:
 *
 * ```ts
 * const bank = await buildMemoryBank(runner, source, { type: "patch", imageSize: 32 });
 * for (const c of topPrototypes(bank.counts, 5)) {
 *   const { picture } = await patternPicture(bank, c, (i) => loadPatternImage(source, i, 32), {
 *     patchSize: 8,
 *   });
 * }
 * ```
 *
 * @module
 */

import { resolve } from "node:path";
import { normalize, roundHalfEven } from "../data/augment.ts";
import type { ImageSource, RawImage } from "../data/source.ts";
import { loadSafetensors, saveSafetensors } from "../checkpoint/safetensors.ts";
import type { NamedTensor } from "../runtime/named_tensor.ts";
import type { BackboneRunner } from "./backbone_runner.ts";
import {
  blankPicture,
  enlargePicture,
  pastePicture,
  READABLE_PANEL_SIZE,
  readableScale,
  resizePicture,
} from "./picture.ts";

/** What the head assigns: every patch token (`patch`) or every image's CLS token (`cls`). */
export type PatternType = "patch" | "cls";

/** Per patch (or image): the head's max logit and argmax prototype; per prototype: its population. */
export interface MemoryBank {
  /** Patch tokens or CLS tokens. */
  readonly type: PatternType;
  /** Number of images, in dataset order. */
  readonly images: number;
  /** Side of the square evaluation picture in pixels ({@link evalPicture}). */
  readonly imageSize: number;
  /** Patch grid rows and columns (h, w) for `patch`; [1, 1] for `cls` (one entry per image). */
  readonly grid: readonly [number, number];
  /** Number of prototypes K of the layer that assigned (Kp for patches with a separate layer). */
  readonly prototypes: number;
  /** Max logit of every entry, [images, h·w] row-major (patch) or [images] (cls). */
  readonly maxLogit: Float32Array;
  /** Argmax prototype of every entry, same layout as `maxLogit`. */
  readonly prototype: Int32Array;
  /** Entries assigned to each prototype, [prototypes]. */
  readonly counts: Int32Array;
}

/**
 * Max and argmax over the last axis of `logits` [rows, prototypes] (ties go to the lower
 * prototype id). Returns `maxLogit` [rows] and `prototype` [rows].
 */
export function assignPrototypes(
  logits: Float32Array,
  rows: number,
  prototypes: number,
): { maxLogit: Float32Array; prototype: Int32Array } {
  if (logits.length !== rows * prototypes) {
    throw new Error(`expected ${rows}×${prototypes} logits, got ${logits.length}`);
  }
  const maxLogit = new Float32Array(rows);
  const prototype = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    const base = r * prototypes;
    let best = 0;
    for (let k = 1; k < prototypes; k++) if (logits[base + k] > logits[base + best]) best = k;
    maxLogit[r] = logits[base + best];
    prototype[r] = best;
  }
  return { maxLogit, prototype };
}

/** How many entries of `prototype` hold each id 0 … prototypes − 1, [prototypes]. */
export function prototypeCounts(prototype: Int32Array, prototypes: number): Int32Array {
  const counts = new Int32Array(prototypes);
  for (const id of prototype) {
    if (!(id >= 0 && id < prototypes)) {
      throw new Error(`prototype id ${id} is not below ${prototypes}`);
    }
    counts[id]++;
  }
  return counts;
}

/**
 * The shorter-side size images are resized to before the centre crop of `size` pixels: the
 * official `size // 7 * 8` (256 for 224, 32 for 32), at least `size`.
 */
export function patternResize(size: number): number {
  return Math.max(size, Math.floor(size / 7) * 8);
}

/**
 * The evaluation view of an image as a picture: the shorter side resized to `resize` pixels
 * (bicubic; the longer side scaled and truncated, as torchvision's `Resize(int)`), then the
 * centre `size` × `size` crop (offsets rounded half-to-even), as `evalTransform` computes before
 * normalising. The memory bank runs the network on exactly these pixels.
 */
export async function evalPicture(
  image: RawImage,
  size: number,
  resize: number = patternResize(size),
): Promise<RawImage> {
  if (resize < size) throw new Error(`resize ${resize} px is smaller than the crop ${size} px`);
  const { width, height } = image;
  const outWidth = width <= height ? resize : Math.trunc(resize * width / height);
  const outHeight = width <= height ? Math.trunc(resize * height / width) : resize;
  const resized = outWidth === width && outHeight === height
    ? image
    : await resizePicture(image, outWidth, outHeight, "cubic");
  const out = blankPicture(size, size);
  pastePicture(
    out,
    resized,
    -roundHalfEven((outWidth - size) / 2),
    -roundHalfEven((outHeight - size) / 2),
  );
  return out;
}

/** Image `index` of `source` as the network sees it: {@link evalPicture} at `size` pixels. */
export async function loadPatternImage(
  source: ImageSource,
  index: number,
  size: number,
): Promise<RawImage> {
  return await evalPicture(await source.load(index), size);
}

/** Options of {@link buildMemoryBank}. */
export interface MemoryBankOptions {
  /** Assign patch tokens or CLS tokens. */
  readonly type: PatternType;
  /** Side of the (square) evaluation crop in pixels, a multiple of the runner's patch size. */
  readonly imageSize: number;
  /** Images per forward pass (default 32); the last batch is padded with black images. */
  readonly batchSize?: number;
  /** Called after every batch with the images done so far and the total. */
  readonly onProgress?: (done: number, total: number) => void;
}

/**
 * Runs every image of `source` (in dataset order, through {@link loadPatternImage}) through the
 * runner's backbone and head, and records the max logit and argmax prototype of each patch
 * (patch logits) or image (CLS logits), and the prototype populations. The runner must have been
 * created with `withHead: true`.
 */
export async function buildMemoryBank(
  runner: BackboneRunner,
  source: ImageSource,
  options: MemoryBankOptions,
): Promise<MemoryBank> {
  const { type, imageSize: size } = options;
  const batchSize = options.batchSize ?? 32;
  if (!runner.head) throw new Error("the memory bank needs a runner created with withHead: true");
  const p = runner.patchSize;
  if (size % p !== 0) {
    throw new Error(
      `the image size ${size} is not a multiple of ${p}, the pixels of a patch token`,
    );
  }
  const grid: [number, number] = type === "patch" ? [size / p, size / p] : [1, 1];
  const perImage = grid[0] * grid[1];
  const total = source.length;
  if (total === 0) throw new Error("the dataset holds no images");
  const maxLogit = new Float32Array(total * perImage);
  const prototype = new Int32Array(total * perImage);
  let prototypes = 0;
  const plane = 3 * size * size;
  for (let start = 0; start < total; start += batchSize) {
    const count = Math.min(batchSize, total - start);
    const images = new Float32Array(batchSize * plane);
    const pictures = await Promise.all(
      Array.from({ length: count }, (_, i) => loadPatternImage(source, start + i, size)),
    );
    pictures.forEach((pic, i) => images.set(normalize(pic.data, size, size), i * plane));
    const out = await runner.run(images, batchSize, size, size);
    const logits = type === "patch" ? out.patchLogits! : out.clsLogits!;
    prototypes = logits.length / (batchSize * perImage);
    const rows = count * perImage;
    const assigned = assignPrototypes(logits.subarray(0, rows * prototypes), rows, prototypes);
    maxLogit.set(assigned.maxLogit, start * perImage);
    prototype.set(assigned.prototype, start * perImage);
    options.onProgress?.(start + count, total);
  }
  return {
    type,
    images: total,
    imageSize: size,
    grid,
    prototypes,
    maxLogit,
    prototype,
    counts: prototypeCounts(prototype, prototypes),
  };
}

const BANK_FORMAT = "ibot-memory-bank";
const RESERVED = ["format", "type", "image_size", "grid"];

/**
 * Writes a bank atomically as safetensors: `max_logit` float32 and `prototype` int64, shaped
 * [images, h·w] (patch) or [images] (cls), `counts` int64 [K]. The metadata holds the bank's
 * `type`, `image_size` and `grid`, and every field of `key` (what the bank was computed from,
 * e.g. {@link weightsIdentity}; those four names are the bank's own).
 */
export async function saveMemoryBank(
  path: string,
  bank: MemoryBank,
  key: Readonly<Record<string, string>>,
): Promise<void> {
  const clash = Object.keys(key).find((name) => RESERVED.includes(name));
  if (clash) throw new Error(`a memory bank key may not use the field name "${clash}"`);
  const shape = bank.type === "patch" ? [bank.images, bank.grid[0] * bank.grid[1]] : [bank.images];
  const int64 = (values: Int32Array) => BigInt64Array.from(values, (v) => BigInt(v));
  const tensors = new Map<string, NamedTensor>([
    ["max_logit", { dtype: "float32", shape, data: bank.maxLogit }],
    ["prototype", { dtype: "int64", shape, data: int64(bank.prototype) }],
    ["counts", { dtype: "int64", shape: [bank.prototypes], data: int64(bank.counts) }],
  ]);
  await saveSafetensors(path, tensors, {
    ...key,
    format: BANK_FORMAT,
    type: bank.type,
    image_size: String(bank.imageSize),
    grid: bank.grid.join("x"),
  });
}

/** Reads a bank written by {@link saveMemoryBank}, with the `key` it was saved with. */
export async function loadMemoryBank(
  path: string,
): Promise<{ bank: MemoryBank; key: Record<string, string> }> {
  const { tensors, metadata } = await loadSafetensors(path);
  const { format, type, image_size: imageSize, grid, ...key } = metadata;
  if (format !== BANK_FORMAT || (type !== "patch" && type !== "cls") || !grid) {
    throw new Error(`${path} is not a memory bank`);
  }
  const tensor = (name: string, dtype: string) => {
    const t = tensors.get(name);
    if (!t || t.dtype !== dtype) throw new Error(`${path} has no ${dtype} ${name} tensor`);
    return t;
  };
  const int32 = (t: NamedTensor) => Int32Array.from(t.data as BigInt64Array, Number);
  const maxLogit = tensor("max_logit", "float32");
  const [h, w] = grid.split("x").map(Number);
  const bank: MemoryBank = {
    type,
    images: maxLogit.shape[0],
    imageSize: Number(imageSize),
    grid: [h, w],
    prototypes: tensor("counts", "int64").shape[0],
    maxLogit: maxLogit.data as Float32Array,
    prototype: int32(tensor("prototype", "int64")),
    counts: int32(tensor("counts", "int64")),
  };
  const entries = bank.images * h * w;
  if (bank.maxLogit.length !== entries || bank.prototype.length !== entries) {
    throw new Error(`${path}: the bank's tensors do not match its ${grid} grid`);
  }
  return { bank, key };
}

/**
 * What identifies a weights file for a cache: its absolute path, size in bytes and modification
 * time (ms since the epoch), as the `weights`, `weights_size` and `weights_mtime` fields.
 */
export async function weightsIdentity(path: string): Promise<Record<string, string>> {
  const info = await Deno.stat(path);
  return {
    weights: resolve(path),
    weights_size: String(info.size),
    weights_mtime: String(info.mtime?.getTime() ?? 0),
  };
}

/**
 * The bank at `path` when it has the requested type and image size and was saved with exactly
 * `key` (same fields, same values); otherwise `build()`'s bank, saved there with `key`. A
 * missing, unreadable or foreign file counts as a mismatch: the cache is recomputed, never
 * trusted.
 */
export async function cachedMemoryBank(
  path: string,
  request: { readonly type: PatternType; readonly imageSize: number },
  key: Readonly<Record<string, string>>,
  build: () => Promise<MemoryBank>,
): Promise<{ bank: MemoryBank; reused: boolean }> {
  const cached = await loadMemoryBank(path).catch(() => undefined);
  if (
    cached && cached.bank.type === request.type && cached.bank.imageSize === request.imageSize &&
    sameKey(cached.key, key)
  ) {
    return { bank: cached.bank, reused: true };
  }
  const bank = await build();
  if (bank.type !== request.type || bank.imageSize !== request.imageSize) {
    throw new Error("the built memory bank is not of the requested type and image size");
  }
  await saveMemoryBank(path, bank, key);
  return { bank, reused: false };
}

function sameKey(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>) {
  const names = Object.keys(b);
  return Object.keys(a).length === names.length && names.every((n) => a[n] === b[n]);
}

/**
 * The `n` most populated prototypes, most populated first (ties: lower id first). Prototypes
 * that no entry chose are left out, so fewer than `n` may come back.
 */
export function topPrototypes(counts: Int32Array, n: number): number[] {
  const used = [...counts.keys()].filter((c) => counts[c] > 0);
  used.sort((a, b) => counts[b] - counts[a] || a - b);
  return used.slice(0, n);
}

/** One image's best entry assigned to a prototype. */
export interface PatternHit {
  /** Image index in dataset order. */
  readonly image: number;
  /** Patch row in the grid (0 for cls). */
  readonly row: number;
  /** Patch column in the grid (0 for cls). */
  readonly col: number;
  /** The entry's max logit. */
  readonly logit: number;
}

/**
 * For every image with an entry assigned to `prototype`: its best such entry (highest logit;
 * ties: the first in row-major order). Sorted by logit, highest first (ties: lower image first).
 * Unlike the official script, images with no assigned entry never appear.
 */
export function rankHits(bank: MemoryBank, prototype: number): PatternHit[] {
  const [, w] = bank.grid;
  const perImage = bank.grid[0] * w;
  const hits: PatternHit[] = [];
  for (let image = 0; image < bank.images; image++) {
    let best = -1;
    for (let j = 0; j < perImage; j++) {
      const e = image * perImage + j;
      if (bank.prototype[e] !== prototype) continue;
      if (best < 0 || bank.maxLogit[e] > bank.maxLogit[image * perImage + best]) best = j;
    }
    if (best < 0) continue;
    const logit = bank.maxLogit[image * perImage + best];
    hits.push({ image, row: Math.floor(best / w), col: best % w, logit });
  }
  return hits.sort((a, b) => b.logit - a.logit || a.image - b.image);
}

/**
 * The `window` × `window` patch neighbourhood centred on patch (`row`, `col`): a square of
 * `window · patchSize` pixels; parts outside the picture are black, as PIL's `crop` pads.
 */
export function neighbourhood(
  picture: RawImage,
  row: number,
  col: number,
  patchSize: number,
  window: number,
): RawImage {
  const half = Math.floor(window / 2);
  const out = blankPicture(window * patchSize, window * patchSize);
  pastePicture(out, picture, -(col - half) * patchSize, -(row - half) * patchSize);
  return out;
}

/** Mean of the HSV value channel (max of R, G, B per pixel), 0–255. */
export function meanValue(picture: RawImage): number {
  const { data } = picture;
  let sum = 0;
  for (let i = 0; i < data.length; i += 3) sum += Math.max(data[i], data[i + 1], data[i + 2]);
  return sum / (picture.width * picture.height);
}

/** Crops whose {@link meanValue} is at most this are too dark to show (official). */
export const DARK_VALUE = 40;

/** The highlight's RGB colour and alpha (0–255), PIL's `fill=(200, 100, 0, 127)`. */
export const HIGHLIGHT: { readonly rgb: readonly number[]; readonly alpha: number } = {
  rgb: [200, 100, 0],
  alpha: 127,
};

/**
 * Blends {@link HIGHLIGHT} over the `size` × `size` square at (`left`, `top`), in place, with
 * PIL's integer blend: out = (dst·(255 − α) + rgb·α) / 255, rounded.
 */
export function highlightSquare(picture: RawImage, left: number, top: number, size: number): void {
  const { rgb, alpha } = HIGHLIGHT;
  for (let y = top; y < top + size; y++) {
    for (let x = left; x < left + size; x++) {
      const i = 3 * (y * picture.width + x);
      for (let c = 0; c < 3; c++) {
        const v = picture.data[i + c] * (255 - alpha) + rgb[c] * alpha + 128;
        picture.data[i + c] = ((v >> 8) + v) >> 8;
      }
    }
  }
}

/**
 * Pastes `cells` (each `unit` × `unit` pixels) row by row into a black square grid of
 * ceil(√topk) cells a side; cells beyond `topk` are ignored and missing ones stay black.
 */
export function patternGrid(cells: readonly RawImage[], topk: number, unit: number): RawImage {
  const side = Math.ceil(Math.sqrt(topk));
  const out = blankPicture(side * unit, side * unit);
  cells.slice(0, topk).forEach((cell, i) => {
    pastePicture(out, cell, (i % side) * unit, Math.floor(i / side) * unit);
  });
  return out;
}

/** Options of {@link patternCells} and {@link patternPicture}. */
export interface PatternOptions {
  /** Pixels a patch token covers on each side (the runner's patch size). */
  readonly patchSize: number;
  /** Cells wanted (official 196; 36 gives a 6 × 6 grid). */
  readonly topk?: number;
  /** Side of a patch neighbourhood in patches (patch type; default 5). */
  readonly window?: number;
  /**
   * {@link patternPicture}: the grid is enlarged by the smallest integer factor that makes each
   * cell at least this many pixels wide (default {@link READABLE_PANEL_SIZE}; 0 keeps the cells'
   * own size).
   */
  readonly panelSize?: number;
}

/** The cells of one prototype's picture and what was passed over. */
export interface PatternCells {
  /** The cells, best first: `window·p`-pixel neighbourhoods (patch) or whole pictures (cls). */
  readonly cells: RawImage[];
  /** The hits the cells show, in the same order. */
  readonly hits: PatternHit[];
  /** Neighbourhoods skipped as too dark ({@link DARK_VALUE}). */
  readonly dark: number;
}

/**
 * The best `topk` cells of `prototype`, following {@link rankHits}. Patch type: the neighbourhood
 * of each image's best patch, skipping near-black ones (mean HSV value ≤ 40) and highlighting the
 * centre patch when the window is wider than one patch. Cls type: the whole pictures. `load`
 * gives an image's evaluation picture ({@link loadPatternImage}). On dark datasets (Fashion-MNIST
 * has black backgrounds) fewer than `topk` cells may qualify; all that do come back.
 */
export async function patternCells(
  bank: MemoryBank,
  prototype: number,
  load: (image: number) => Promise<RawImage>,
  options: PatternOptions,
): Promise<PatternCells> {
  const topk = options.topk ?? 36;
  const window = options.window ?? 5;
  const p = options.patchSize;
  const cells: RawImage[] = [];
  const hits: PatternHit[] = [];
  let dark = 0;
  for (const hit of rankHits(bank, prototype)) {
    if (cells.length >= topk) break;
    const picture = await load(hit.image);
    if (bank.type === "cls") {
      cells.push(picture);
      hits.push(hit);
      continue;
    }
    const crop = neighbourhood(picture, hit.row, hit.col, p, window);
    if (meanValue(crop) <= DARK_VALUE) {
      dark++;
      continue;
    }
    if (window > 1) {
      highlightSquare(crop, Math.floor(window / 2) * p, Math.floor(window / 2) * p, p);
    }
    cells.push(crop);
    hits.push(hit);
  }
  return { cells, hits, dark };
}

/**
 * One prototype's grid picture ({@link patternCells} pasted by {@link patternGrid}): a square of
 * ceil(√topk) cells a side, each `window·p` pixels (patch) or the image size (cls), then enlarged
 * `scale` times by nearest neighbour so that each cell reaches the readable panel size
 * ({@link readableScale}).
 */
export async function patternPicture(
  bank: MemoryBank,
  prototype: number,
  load: (image: number) => Promise<RawImage>,
  options: PatternOptions,
): Promise<PatternCells & { picture: RawImage; scale: number }> {
  const found = await patternCells(bank, prototype, load, options);
  const unit = bank.type === "patch" ? (options.window ?? 5) * options.patchSize : bank.imageSize;
  const grid = patternGrid(found.cells, options.topk ?? 36, unit);
  const scale = readableScale(unit, unit, options.panelSize ?? READABLE_PANEL_SIZE);
  return { ...found, picture: enlargePicture(grid, scale), scale };
}
