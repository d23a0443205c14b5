/**
 * What pre-training sees of an image: its multi-crop views and the masks of its global crops,
 * drawn from the same seeded generators the loader and the trainer use, as pictures (masked
 * patches shaded, enlarged by nearest neighbour to a readable size) ready for a grid.
 *
 * @module
 */

import { augmentationStream, maskStream } from "../data/streams.ts";
import { IMAGENET_MEAN, IMAGENET_STD, multiCrop, type MultiCropConfig } from "../data/augment.ts";
import { MaskGenerator, type MaskingConfig } from "../data/masking.ts";
import type { ImageSource, RawImage } from "../data/source.ts";
import { Rng } from "../runtime/rng.ts";
import { enlargePicture, READABLE_PANEL_SIZE, readableScale, resizePicture } from "./picture.ts";

/**
 * A picture from a normalised CHW crop (3·height·width values, ImageNet mean and std): the
 * inverse of `normalize`, rounded and clamped to 0–255.
 */
export function denormalize(chw: Float32Array, width: number, height: number): RawImage {
  const plane = width * height;
  if (chw.length !== 3 * plane) {
    throw new Error(`a ${width}×${height} CHW crop has ${3 * plane} values, got ${chw.length}`);
  }
  const data = new Uint8Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    for (let p = 0; p < plane; p++) {
      const value = (chw[c * plane + p] * IMAGENET_STD[c] + IMAGENET_MEAN[c]) * 255;
      data[3 * p + c] = Math.min(255, Math.max(0, Math.round(value)));
    }
  }
  return { data, width, height };
}

/**
 * A copy of `picture` with the masked cells of a `rows`×`columns` patch mask (row-major, 1 =
 * masked; the picture's sides multiples of the grid's) blended with `color`:
 * `round((1 − alpha)·pixel + alpha·color)`.
 */
export function shadeMask(
  picture: RawImage,
  mask: Uint8Array,
  rows: number,
  columns: number,
  color: readonly number[] = [255, 0, 0],
  alpha = 0.5,
): RawImage {
  const { width, height } = picture;
  if (mask.length !== rows * columns || width % columns !== 0 || height % rows !== 0) {
    throw new Error(
      `a ${rows}×${columns} mask (${mask.length} cells) does not tile a ${width}×${height} picture`,
    );
  }
  const cellWidth = width / columns;
  const cellHeight = height / rows;
  const data = picture.data.slice();
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (mask[Math.floor(y / cellHeight) * columns + Math.floor(x / cellWidth)] === 0) continue;
      for (let c = 0; c < 3; c++) {
        const i = 3 * (y * width + x) + c;
        data[i] = Math.round((1 - alpha) * data[i] + alpha * color[c]);
      }
    }
  }
  return { data, width, height };
}

/** The training recipe a preview follows (a `RunConfig` from the pre-training arguments fits). */
export interface CropsPreviewConfig {
  /** The multi-crop recipe. */
  readonly crops: MultiCropConfig;
  /** The mask generation settings. */
  readonly masking: MaskingConfig;
  /** Side of the global-crop mask grid (global crop size / patch size). */
  readonly maskGrid: number;
}

/** Options of {@link cropsPreview}. */
export interface CropsPreviewOptions {
  /** The epoch whose crops and masks are drawn (default 0). */
  readonly epoch?: number;
  /**
   * Every picture is enlarged by the smallest integer factor that makes a global crop at least
   * this many pixels wide (default {@link READABLE_PANEL_SIZE}; 0 keeps the crops' own size), so
   * local crops keep their size relative to the global ones.
   */
  readonly panelSize?: number;
}

/**
 * One row per image index: the image resized to the global crop size, then its global crops with
 * their masked patches shaded red, then its local crops, exactly as pre-training with `seed`
 * draws them at `options.epoch` (the same {@link augmentationStream} and {@link maskStream} as the
 * loader and the trainer); all enlarged by one nearest-neighbour factor ({@link readableScale}).
 */
export async function cropsPreview(
  source: ImageSource,
  indices: readonly number[],
  config: CropsPreviewConfig,
  seed: number,
  options: CropsPreviewOptions = {},
): Promise<RawImage[][]> {
  const { crops, maskGrid } = config;
  const epoch = options.epoch ?? 0;
  const scale = readableScale(
    crops.globalCropSize,
    crops.globalCropSize,
    options.panelSize ?? READABLE_PANEL_SIZE,
  );
  const generator = new MaskGenerator(config.masking);
  const root = new Rng(seed);
  const rows: RawImage[][] = [];
  for (const index of indices) {
    if (!Number.isInteger(index) || index < 0 || index >= source.length) {
      throw new Error(`image index ${index} is outside the source's 0–${source.length - 1}`);
    }
    const image = await source.load(index);
    const views = await multiCrop(image, crops, augmentationStream(root, epoch, index));
    const row = [await resizePicture(image, crops.globalCropSize, crops.globalCropSize)];
    views.forEach((view, v) => {
      const size = v < crops.globalCropsNumber ? crops.globalCropSize : crops.localCropSize;
      const picture = denormalize(view, size, size);
      if (v >= crops.globalCropsNumber) {
        row.push(picture);
        return;
      }
      const mask = generator.draw(
        maskGrid,
        maskGrid,
        epoch,
        maskStream(root, epoch, index, v),
      );
      row.push(shadeMask(picture, mask, maskGrid, maskGrid));
    });
    rows.push(row.map((picture) => enlargePicture(picture, scale)));
  }
  return rows;
}
