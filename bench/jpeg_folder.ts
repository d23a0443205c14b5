/**
 * Random JPEG photographs-to-be in the ImageFolder layout, made on the fly for the data-pipeline
 * benchmarks (`loader_throughput.ts`, the GPU check's whole-pipeline run).
 *
 * @module
 */

import { join } from "node:path";
import sharp from "sharp";
import { Rng } from "../lib/runtime/rng.ts";

/** Class folders the images are spread over. */
const CLASSES = 8;

/**
 * A JPEG (quality 90) of about 500×375 pixels, each side drawn within ±20%: random colours on a
 * coarse grid resized smoothly (bicubic) to the full size, plus uniform noise of ±16 per channel.
 */
async function randomJpeg(rng: Rng): Promise<Uint8Array> {
  const width = Math.round(500 * (0.8 + 0.4 * rng.uniform()));
  const height = Math.round(375 * (0.8 + 0.4 * rng.uniform()));
  const coarse = Uint8Array.from({ length: 12 * 9 * 3 }, () => rng.int(256));
  const smooth = await sharp(coarse, { raw: { width: 12, height: 9, channels: 3 } })
    .resize(width, height, { kernel: "cubic" })
    .raw()
    .toBuffer();
  const pixels = new Uint8Array(smooth.length);
  for (let i = 0; i < pixels.length; i++) {
    pixels[i] = Math.min(255, Math.max(0, smooth[i] + rng.int(33) - 16));
  }
  const jpeg = await sharp(pixels, { raw: { width, height, channels: 3 } })
    .jpeg({ quality: 90 })
    .toBuffer();
  return new Uint8Array(jpeg);
}

/**
 * Writes `unique` random JPEGs under `root`/class<k>/ and hard links to them until the folder
 * holds `total` images (so that an epoch is long without making every image); returns the bytes
 * of JPEG written.
 */
export async function makeJpegFolder(
  root: string,
  total: number,
  unique: number,
): Promise<number> {
  const rng = new Rng(0);
  for (let c = 0; c < CLASSES; c++) await Deno.mkdir(join(root, `class${c}`), { recursive: true });
  const path = (i: number) =>
    join(root, `class${i % CLASSES}`, `img${String(i).padStart(6, "0")}.jpg`);
  let bytes = 0;
  for (let i = 0; i < Math.min(unique, total); i++) {
    const jpeg = await randomJpeg(rng);
    await Deno.writeFile(path(i), jpeg);
    bytes += jpeg.length;
  }
  for (let i = unique; i < total; i++) await Deno.link(path(i % unique), path(i));
  return bytes;
}
