/**
 * Drawing on RGB pictures ({@link RawImage}): one-pixel lines, as PIL's `ImageDraw.line` with
 * width 1 draws them for the official analysis scripts.
 *
 * @module
 */

import type { RawImage } from "../data/source.ts";

/** Pure red, the colour of the official correspondence lines. */
export const RED: readonly number[] = [255, 0, 0];

/**
 * Draws a one-pixel line from (`x0`, `y0`) to (`x1`, `y1`) in `rgb`, both endpoints included
 * (Bresenham). Coordinates are in pixels, column then row; fractional ones are floored (as PIL
 * truncates them); pixels outside the picture are skipped. Draws in place.
 */
export function drawLine(
  picture: RawImage,
  x0: number,
  y0: number,
  x1: number,
  y1: number,
  rgb: readonly number[] = RED,
): void {
  let x = Math.floor(x0);
  let y = Math.floor(y0);
  const xEnd = Math.floor(x1);
  const yEnd = Math.floor(y1);
  const dx = Math.abs(xEnd - x);
  const dy = -Math.abs(yEnd - y);
  const stepX = x < xEnd ? 1 : -1;
  const stepY = y < yEnd ? 1 : -1;
  let error = dx + dy;
  while (true) {
    if (x >= 0 && x < picture.width && y >= 0 && y < picture.height) {
      picture.data.set(rgb, 3 * (y * picture.width + x));
    }
    if (x === xEnd && y === yEnd) return;
    const twice = 2 * error;
    if (twice >= dy) {
      error += dy;
      x += stepX;
    }
    if (twice <= dx) {
      error += dx;
      y += stepY;
    }
  }
}
