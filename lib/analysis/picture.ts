/**
 * RGB pictures for the analyses: resizing with sharp, nearest-neighbour enlargement of small
 * pictures to a readable panel size, side-by-side composition, and PNG encoding (atomic file
 * writes). A picture is the toolkit's {@link RawImage}: HWC RGB bytes.
 *
 * @module
 */

import sharp from "sharp";
import type { RawImage } from "../data/source.ts";

/** A blank picture of `width`×`height` filled with `rgb` (default black). */
export function blankPicture(
  width: number,
  height: number,
  rgb: readonly number[] = [0, 0, 0],
): RawImage {
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) data.set(rgb, 3 * i);
  return { data, width, height };
}

/** Resizes with sharp (`kernel` cubic by default, nearest for masks and maps). */
export async function resizePicture(
  picture: RawImage,
  width: number,
  height: number,
  kernel: "cubic" | "nearest" = "cubic",
): Promise<RawImage> {
  const data = await sharp(picture.data, {
    raw: { width: picture.width, height: picture.height, channels: 3 },
  }).resize(width, height, { fit: "fill", kernel }).raw().toBuffer();
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width, height };
}

/**
 * The shorter side, in pixels, that analysis pictures enlarge each panel to at least (about the
 * size of an ImageNet input, where the patches of a small image are plain to see).
 */
export const READABLE_PANEL_SIZE = 224;

/**
 * The smallest integer factor that brings the shorter side of a `width`×`height` panel to at least
 * `panelSize` pixels; 1 when the panel is that large already (so a `panelSize` of 0 or 1 keeps every
 * picture at its own size).
 */
export function readableScale(
  width: number,
  height: number,
  panelSize: number = READABLE_PANEL_SIZE,
): number {
  if (!(Number.isInteger(panelSize) && panelSize >= 0)) {
    throw new Error(
      `the panel size must be a non-negative whole number of pixels, got ${panelSize}`,
    );
  }
  return Math.max(1, Math.ceil(panelSize / Math.min(width, height)));
}

/**
 * The picture enlarged `factor` times by nearest neighbour: pixel (x, y) becomes the
 * `factor`×`factor` block at (factor·x, factor·y), so patches stay crisp squares. Factor 1 returns
 * the picture itself.
 */
export function enlargePicture(picture: RawImage, factor: number): RawImage {
  if (!(Number.isInteger(factor) && factor >= 1)) {
    throw new Error(`the enlargement factor must be a positive whole number, got ${factor}`);
  }
  if (factor === 1) return picture;
  const width = picture.width * factor;
  const height = picture.height * factor;
  const data = new Uint8Array(3 * width * height);
  const rowBytes = 3 * width;
  const source = picture.data;
  for (let y = 0; y < picture.height; y++) {
    const top = y * factor * rowBytes;
    let to = top;
    for (let from = 3 * y * picture.width; from < 3 * (y + 1) * picture.width; from += 3) {
      for (let k = 0; k < factor; k++) {
        data[to++] = source[from];
        data[to++] = source[from + 1];
        data[to++] = source[from + 2];
      }
    }
    for (let k = 1; k < factor; k++) data.copyWithin(top + k * rowBytes, top, top + rowBytes);
  }
  return { data, width, height };
}

/** Copies `source` into `target` with its top-left corner at (`left`, `top`), clipped. */
export function pastePicture(target: RawImage, source: RawImage, left: number, top: number): void {
  for (let y = 0; y < source.height; y++) {
    const ty = top + y;
    if (ty < 0 || ty >= target.height) continue;
    for (let x = 0; x < source.width; x++) {
      const tx = left + x;
      if (tx < 0 || tx >= target.width) continue;
      const s = 3 * (y * source.width + x);
      target.data.set(source.data.subarray(s, s + 3), 3 * (ty * target.width + tx));
    }
  }
}

/** Pictures side by side, top-aligned, `gap` pixels of `background` between them. */
export function sideBySide(
  pictures: readonly RawImage[],
  gap = 0,
  background: readonly number[] = [255, 255, 255],
): RawImage {
  const width = pictures.reduce((w, p) => w + p.width, 0) + gap * Math.max(0, pictures.length - 1);
  const height = Math.max(...pictures.map((p) => p.height));
  const out = blankPicture(width, height, background);
  let left = 0;
  for (const p of pictures) {
    pastePicture(out, p, left, 0);
    left += p.width + gap;
  }
  return out;
}

/** The picture as PNG bytes. */
export async function encodePng(picture: RawImage): Promise<Uint8Array> {
  const buffer = await sharp(picture.data, {
    raw: { width: picture.width, height: picture.height, channels: 3 },
  }).png().toBuffer();
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

/** Writes the picture as a PNG file (to `<path>.tmp-<pid>`, then renamed into place). */
export async function savePng(path: string, picture: RawImage): Promise<void> {
  const temp = `${path}.tmp-${Deno.pid}`;
  await Deno.writeFile(temp, await encodePng(picture));
  await Deno.rename(temp, path);
}
