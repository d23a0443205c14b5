/**
 * Attention maps of a ViT (the official `visualize_attention.py`): the last block's attention of
 * the CLS query over the patch keys, per head; threshold masks that keep a share of each head's
 * attention mass; and the pictures the official script saves (the input, a heat map per head, a
 * colour overlay of the heads on a darkened grayscale background, and the side-by-side composite),
 * enlarged by nearest neighbour to a readable panel size.
 *
 * A map or mask of one image is row-major [heads, h, w] over the h×w patch grid.
 *
 * @module
 */

import sharp from "sharp";
import { normalize } from "../data/augment.ts";
import type { RawImage } from "../data/source.ts";
import type { BackboneRunner } from "./backbone_runner.ts";
import { viridis } from "./colormap.ts";
import { enlargePicture, READABLE_PANEL_SIZE, readableScale, sideBySide } from "./picture.ts";

/** The official default share of the attention mass the masks keep. */
export const DEFAULT_THRESHOLD = 0.6;

/** The six head colours of the official overlay (blue, red, yellow, navy, green, purple), RGB. */
export const OVERLAY_COLORS: readonly (readonly [number, number, number])[] = [
  [0, 160, 215],
  [220, 55, 60],
  [245, 180, 0],
  [10, 120, 190],
  [40, 150, 100],
  [135, 75, 145],
];

/** A head's mask value at or below this share of its maximum is not drawn on the overlay. */
const OVERLAY_CUTOFF = 0.2;

/**
 * The CLS query's attention over the patch keys, per head: `attention[image, j, 0, 1 + k]` for
 * head j and patch k. `attention` is [B, heads, tokens, tokens] with tokens = 1 + h·w and
 * `grid` = [h, w]. Returns [heads, h, w].
 */
export function clsAttention(
  attention: Float32Array,
  heads: number,
  tokens: number,
  grid: readonly [number, number],
  image = 0,
): Float32Array {
  const patches = grid[0] * grid[1];
  if (tokens !== 1 + patches) {
    throw new Error(`${tokens} tokens do not hold a CLS token and ${grid[0]}×${grid[1]} patches`);
  }
  if (attention.length < (image + 1) * heads * tokens * tokens) {
    throw new Error(
      `an attention of ${attention.length} values holds no image ${image} of ${heads} heads × ` +
        `${tokens}×${tokens} tokens`,
    );
  }
  const maps = new Float32Array(heads * patches);
  for (let j = 0; j < heads; j++) {
    const row = (image * heads + j) * tokens * tokens;
    maps.set(attention.subarray(row + 1, row + tokens), j * patches);
  }
  return maps;
}

/**
 * Per head, the smallest set of largest-attention patches that holds more than `threshold` of the
 * head's attention mass (official): the values sorted ascending, their running sum divided by the
 * total, and a patch kept when that share exceeds 1 − `threshold`. Among equal values the lower
 * patch index sorts first (so it is dropped first). `maps` is [heads, N]; returns 0/1 [heads, N].
 * Threshold 1 keeps every patch with a positive value, threshold 0 keeps none.
 */
export function thresholdMasks(maps: Float32Array, heads: number, threshold: number): Uint8Array {
  if (!(threshold >= 0 && threshold <= 1)) {
    throw new Error(`the threshold must lie in [0, 1], got ${threshold}`);
  }
  const n = maps.length / heads;
  if (!Number.isInteger(n)) {
    throw new Error(`${maps.length} values do not split into ${heads} heads`);
  }
  const masks = new Uint8Array(maps.length);
  const order = new Int32Array(n);
  for (let j = 0; j < heads; j++) {
    const values = maps.subarray(j * n, (j + 1) * n);
    for (let k = 0; k < n; k++) order[k] = k;
    order.sort((a, b) => values[a] - values[b] || a - b);
    // The total is the same running sum, so the last share is exactly 1.
    let total = 0;
    for (const k of order) total += values[k];
    let running = 0;
    for (const k of order) {
      running += values[k];
      if (total > 0 && running / total > 1 - threshold) masks[j * n + k] = 1;
    }
  }
  return masks;
}

/**
 * The size an image of `width`×`height` is resized to, as torchvision's `Resize(imageSize)`: one
 * number is the shorter side (the longer one scaled and truncated), two are [height, width].
 * Returns [width, height].
 */
export function resizedSize(
  width: number,
  height: number,
  imageSize: readonly number[],
): [number, number] {
  if (imageSize.length === 2) return [imageSize[1], imageSize[0]];
  if (imageSize.length !== 1) throw new Error(`the image size takes one or two numbers`);
  const s = imageSize[0];
  return width < height ? [s, Math.trunc(s * height / width)] : [Math.trunc(s * width / height), s];
}

/**
 * The picture the network sees (official): resized bilinearly to `imageSize` (see
 * {@link resizedSize}; the picture as it is without one), then cropped from the top-left corner
 * to a multiple of `patchSize`. A size that leaves no whole patch throws one sentence.
 */
export async function preparePicture(
  picture: RawImage,
  patchSize: number,
  imageSize?: readonly number[],
): Promise<RawImage> {
  const [width, height] = imageSize
    ? resizedSize(picture.width, picture.height, imageSize)
    : [picture.width, picture.height];
  const cropWidth = width - width % patchSize;
  const cropHeight = height - height % patchSize;
  if (!(cropWidth > 0 && cropHeight > 0)) {
    throw new Error(
      `an image of ${width}×${height} pixels holds no whole patch of ${patchSize} pixels`,
    );
  }
  if (width === picture.width && height === picture.height) {
    return cropPicture(picture, cropWidth, cropHeight);
  }
  const data = await sharp(picture.data, {
    raw: { width: picture.width, height: picture.height, channels: 3 },
  }).resize(width, height, { fit: "fill", kernel: "linear" })
    .extract({ left: 0, top: 0, width: cropWidth, height: cropHeight })
    .raw().toBuffer();
  return {
    data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    width: cropWidth,
    height: cropHeight,
  };
}

/** The top-left `width`×`height` of a picture (a copy). */
function cropPicture(picture: RawImage, width: number, height: number): RawImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const from = 3 * y * picture.width;
    data.set(picture.data.subarray(from, from + 3 * width), 3 * y * width);
  }
  return { data, width, height };
}

/** Attention maps and masks of one image, with the picture they were computed on. */
export interface AttentionMapsResult {
  /** The picture the network saw (resized and cropped), HWC RGB bytes. */
  readonly picture: RawImage;
  /** The normalised input [3, height, width] (ImageNet mean and standard deviation). */
  readonly input: Float32Array;
  /** Patch size in pixels. */
  readonly patchSize: number;
  /** Number of heads. */
  readonly heads: number;
  /** Patch grid [h, w]. */
  readonly grid: readonly [number, number];
  /** CLS-to-patch attention [heads, h, w]. */
  readonly maps: Float32Array;
  /** Threshold masks [heads, h, w], 1 = kept (see {@link thresholdMasks}). */
  readonly masks: Uint8Array;
}

/** Options of {@link attentionMaps}. */
export interface AttentionOptions {
  /** Resize target, one number (shorter side) or [height, width]; default: the picture's size. */
  readonly imageSize?: readonly number[];
  /** Share of the attention mass the masks keep (default {@link DEFAULT_THRESHOLD}). */
  readonly threshold?: number;
}

/**
 * Runs the backbone, a ViT, on one picture (resized and cropped by {@link preparePicture}, then
 * normalised) and returns its per-head CLS attention maps and threshold masks; a Swin, which has
 * no CLS token, is one sentence.
 */
export async function attentionMaps(
  runner: BackboneRunner,
  picture: RawImage,
  options: AttentionOptions = {},
): Promise<AttentionMapsResult> {
  const patchSize = runner.patchSize;
  const seen = await preparePicture(picture, patchSize, options.imageSize);
  const input = normalize(seen.data, seen.width, seen.height);
  const run = await runner.run(input, 1, seen.height, seen.width);
  if (!run.attention) {
    throw new Error(
      `attention maps need a ViT: ${runner.loaded.path} holds a Swin, which has no CLS token ` +
        `and attends within windows`,
    );
  }
  const tokens = 1 + run.grid[0] * run.grid[1];
  const heads = run.attention.length / (tokens * tokens);
  const maps = clsAttention(run.attention, heads, tokens, run.grid);
  const masks = thresholdMasks(maps, heads, options.threshold ?? DEFAULT_THRESHOLD);
  return { picture: seen, input, patchSize, heads, grid: run.grid, maps, masks };
}

/**
 * The input as the official `img.png` shows it: the normalised input scaled by its own minimum and
 * maximum (over all channels) into [0, 255], rounded.
 */
export function inputPicture(result: AttentionMapsResult): RawImage {
  const { input, picture: { width, height } } = result;
  const [low, high] = range(input);
  const scale = 1 / Math.max(high - low, 1e-5);
  const plane = width * height;
  const data = new Uint8Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    for (let p = 0; p < plane; p++) {
      data[3 * p + c] = Math.min(255, Math.floor((input[c * plane + p] - low) * scale * 255 + 0.5));
    }
  }
  return { data, width, height };
}

/**
 * Head `head`'s map as a viridis heat map the size of the picture (each patch a block of
 * patchSize² pixels), scaled by the map's own minimum and maximum (a constant map is all dark).
 */
export function heatMap(result: AttentionMapsResult, head: number): RawImage {
  const [h, w] = result.grid;
  const map = result.maps.subarray(head * h * w, (head + 1) * h * w);
  const [low, high] = range(map);
  const colors = Array.from(map, (v) => viridis(high > low ? (v - low) / (high - low) : 0));
  return upsampleCells(colors, result.grid, result.patchSize);
}

/**
 * The official colour overlay (`show_attn_color`). Background: the normalised input scaled by its
 * minimum and maximum into [192, 256], averaged over the channels, truncated, and darkened ×0.1.
 * For heads 0 to 5, each patch keeps the head with the largest attention × mask (the lower head on
 * a tie; none where all are 0); each head's kept values are scaled by their minimum and maximum to
 * [0, 1], and where the scaled value m exceeds 0.2 the head's colour is blended in with alpha √m.
 * A head whose kept values are constant is not drawn (the official code divides by zero there).
 */
export function colorOverlay(result: AttentionMapsResult): RawImage {
  const { input, heads, grid, maps, masks, patchSize, picture: { width, height } } = result;
  const cells = grid[0] * grid[1];
  const drawn = Math.min(heads, OVERLAY_COLORS.length);
  const winner = new Int32Array(cells).fill(-1);
  const kept = new Float64Array(drawn * cells);
  for (let c = 0; c < cells; c++) {
    let best = 0;
    for (let j = 0; j < drawn; j++) {
      const v = maps[j * cells + c] * masks[j * cells + c];
      if (v > best) [best, winner[c]] = [v, j];
    }
    if (winner[c] >= 0) kept[winner[c] * cells + c] = best;
  }
  const alpha = new Float64Array(cells);
  for (let j = 0; j < drawn; j++) {
    const [low, high] = range(kept.subarray(j * cells, (j + 1) * cells));
    if (!(high > low)) continue;
    for (let c = 0; c < cells; c++) {
      const m = (kept[j * cells + c] - low) / (high - low);
      if (winner[c] === j && m > OVERLAY_CUTOFF) alpha[c] = Math.sqrt(m);
    }
  }
  const [low, high] = range(input);
  const scale = 64 / Math.max(high - low, 1e-12);
  const plane = width * height;
  const data = new Uint8Array(3 * plane);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const p = y * width + x;
      let sum = 0;
      for (let ch = 0; ch < 3; ch++) sum += (input[ch * plane + p] - low) * scale + 192;
      const dark = 0.1 * Math.trunc(sum / 3);
      const c = Math.floor(y / patchSize) * grid[1] + Math.floor(x / patchSize);
      const a = alpha[c];
      for (let ch = 0; ch < 3; ch++) {
        const color = a > 0 ? OVERLAY_COLORS[winner[c]][ch] : 0;
        data[3 * p + ch] = Math.trunc(dark * (1 - a) + a * color);
      }
    }
  }
  return { data, width, height };
}

/** White pixels between the composite's panels, so that neighbouring heat maps stay apart. */
export const COMPOSITE_GAP = 4;

/**
 * The official composite: [input | colour overlay | every head's heat map], side by side,
 * {@link COMPOSITE_GAP} white pixels apart.
 */
export function attentionComposite(
  input: RawImage,
  overlay: RawImage,
  heatMaps: readonly RawImage[],
): RawImage {
  return sideBySide([input, overlay, ...heatMaps], COMPOSITE_GAP, [255, 255, 255]);
}

/**
 * Every picture the official script saves for one image, each panel enlarged `scale` times (so the
 * panels are `scale` × the picture the network saw).
 */
export interface AttentionPictures {
  /** `img.png`: the input (see {@link inputPicture}). */
  readonly input: RawImage;
  /** `attn-head{j}.png`: one heat map per head (see {@link heatMap}). */
  readonly heatMaps: RawImage[];
  /** `attn_color.png`: the colour overlay (see {@link colorOverlay}). */
  readonly overlay: RawImage;
  /** `attn.png`: the composite (see {@link attentionComposite}). */
  readonly composite: RawImage;
  /** The nearest-neighbour enlargement factor of every panel (see {@link readableScale}). */
  readonly scale: number;
}

/** Options of {@link attentionPictures}. */
export interface AttentionPicturesOptions {
  /**
   * Each panel is enlarged by the smallest integer factor that makes its shorter side at least this
   * many pixels (default {@link READABLE_PANEL_SIZE}; 0 keeps the network's size).
   */
  readonly panelSize?: number;
}

/** Renders all the pictures of one result, enlarged to a readable panel size. */
export function attentionPictures(
  result: AttentionMapsResult,
  options: AttentionPicturesOptions = {},
): AttentionPictures {
  const { width, height } = result.picture;
  const scale = readableScale(width, height, options.panelSize ?? READABLE_PANEL_SIZE);
  const input = enlargePicture(inputPicture(result), scale);
  const heatMaps = Array.from(
    { length: result.heads },
    (_, j) => enlargePicture(heatMap(result, j), scale),
  );
  const overlay = enlargePicture(colorOverlay(result), scale);
  const composite = attentionComposite(input, overlay, heatMaps);
  return { input, heatMaps, overlay, composite, scale };
}

/** [minimum, maximum] of the values. */
function range(values: ArrayLike<number>): [number, number] {
  let low = Infinity;
  let high = -Infinity;
  for (let i = 0; i < values.length; i++) {
    low = Math.min(low, values[i]);
    high = Math.max(high, values[i]);
  }
  return [low, high];
}

/** A picture of grid cells, each cell a `size`×`size` block of its colour. */
function upsampleCells(
  colors: readonly (readonly number[])[],
  grid: readonly [number, number],
  size: number,
): RawImage {
  const [h, w] = grid;
  const width = w * size;
  const height = h * size;
  const data = new Uint8Array(3 * width * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      data.set(colors[Math.floor(y / size) * w + Math.floor(x / size)], 3 * (y * width + x));
    }
  }
  return { data, width, height };
}
