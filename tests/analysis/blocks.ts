/**
 * Checks for nearest-neighbour enlarged pictures (every `factor`×`factor` block one colour) and
 * for the panels of composed pictures.
 */

import sharp from "sharp";
import { assert } from "../assert.ts";
import type { RawImage } from "../../lib/data/source.ts";

/** Decodes a PNG file into RGB bytes. */
export async function readPng(path: string): Promise<RawImage> {
  const { data, info } = await sharp(path).removeAlpha().raw().toBuffer({
    resolveWithObject: true,
  });
  return { data: new Uint8Array(data), width: info.width, height: info.height };
}

/** The [r, g, b] of pixel (x, y). */
export function pixel(picture: RawImage, x: number, y: number): number[] {
  const i = 3 * (y * picture.width + x);
  return [...picture.data.subarray(i, i + 3)];
}

/**
 * Asserts that `picture` is made of `factor`×`factor` blocks of one colour each, and returns the
 * picture of one pixel per block (what an exact nearest-neighbour enlargement was made from).
 */
export function shrinkBlocks(picture: RawImage, factor: number, what = "picture"): RawImage {
  const { width, height } = picture;
  assert.equal(width % factor, 0, `${what}: width ${width} is not a multiple of ${factor}`);
  assert.equal(height % factor, 0, `${what}: height ${height} is not a multiple of ${factor}`);
  const small = { width: width / factor, height: height / factor };
  const data = new Uint8Array(3 * small.width * small.height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const block = 3 * (Math.floor(y / factor) * small.width + Math.floor(x / factor));
      const at = 3 * (y * width + x);
      for (let c = 0; c < 3; c++) {
        if (x % factor === 0 && y % factor === 0) data[block + c] = picture.data[at + c];
        else if (picture.data[at + c] !== data[block + c]) {
          assert.fail(`${what}: pixel (${x}, ${y}) differs from its ${factor}×${factor} block`);
        }
      }
    }
  }
  return { data, ...small };
}

/** The `width`×`height` part of `picture` whose top-left corner is (`left`, `top`), a copy. */
export function cropPicture(
  picture: RawImage,
  left: number,
  top: number,
  width: number,
  height: number,
): RawImage {
  const data = new Uint8Array(3 * width * height);
  for (let y = 0; y < height; y++) {
    const from = 3 * ((top + y) * picture.width + left);
    data.set(picture.data.subarray(from, from + 3 * width), 3 * y * width);
  }
  return { data, width, height };
}
