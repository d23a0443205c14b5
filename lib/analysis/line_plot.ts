/**
 * A small line plot as an RGB picture, for the accuracy curves of the robustness analyses: white
 * background, black axes, light grey grid lines at every tenth of each range, each series as
 * one-pixel segments with a 5×5 square on every point. There is no text: the tasks print the same
 * numbers as a table, and the series colours are {@link PLOT_COLOURS} in order.
 *
 * @module
 */

import type { RawImage } from "../data/source.ts";
import { drawLine } from "./draw.ts";
import { blankPicture } from "./picture.ts";

/** Series colours, in order: blue, orange, green, red, purple, brown. */
export const PLOT_COLOURS: readonly (readonly number[])[] = [
  [31, 119, 180],
  [255, 127, 14],
  [44, 160, 44],
  [214, 39, 40],
  [148, 103, 189],
  [140, 86, 75],
];

/** One curve: its (x, y) points in drawing order. */
export interface LineSeries {
  /** Points (x, y) in data units. */
  readonly points: readonly (readonly [number, number])[];
  /** Colour (default: {@link PLOT_COLOURS} by the series' index). */
  readonly rgb?: readonly number[];
}

/** Options of {@link drawLinePlot}. */
export interface LinePlotOptions {
  /** Picture width in pixels (default 480). */
  readonly width?: number;
  /** Picture height in pixels (default 320). */
  readonly height?: number;
  /** x range [low, high] (default: the points' range). */
  readonly xRange?: readonly [number, number];
  /** y range [low, high] (default [0, 100], percentages). */
  readonly yRange?: readonly [number, number];
}

const MARGIN = 24;
const GRID_GREY = [225, 225, 225];
const BLACK = [0, 0, 0];

/** Draws `series` on a new picture; a range of zero width is widened by one unit. */
export function drawLinePlot(
  series: readonly LineSeries[],
  options: LinePlotOptions = {},
): RawImage {
  const width = options.width ?? 480;
  const height = options.height ?? 320;
  if (width <= 2 * MARGIN || height <= 2 * MARGIN) {
    throw new Error(`a line plot needs more than ${2 * MARGIN} pixels each way`);
  }
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  let [x0, x1] = options.xRange ?? [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = options.yRange ?? [0, 100];
  if (!(x1 > x0)) [x0, x1] = [x0 - 0.5, x0 + 0.5];
  if (!(y1 > y0)) [y0, y1] = [y0 - 0.5, y0 + 0.5];
  const picture = blankPicture(width, height, [255, 255, 255]);
  const left = MARGIN, right = width - MARGIN, top = MARGIN, bottom = height - MARGIN;
  const px = (x: number) => left + (x - x0) / (x1 - x0) * (right - left);
  const py = (y: number) => bottom - (y - y0) / (y1 - y0) * (bottom - top);
  for (let i = 1; i <= 10; i++) {
    const gx = left + i * (right - left) / 10;
    const gy = bottom - i * (bottom - top) / 10;
    drawLine(picture, gx, top, gx, bottom, GRID_GREY);
    drawLine(picture, left, gy, right, gy, GRID_GREY);
  }
  drawLine(picture, left, top, left, bottom, BLACK);
  drawLine(picture, left, bottom, right, bottom, BLACK);
  series.forEach((s, index) => {
    const rgb = s.rgb ?? PLOT_COLOURS[index % PLOT_COLOURS.length];
    s.points.forEach(([x, y], i) => {
      if (i > 0) {
        const [xp, yp] = s.points[i - 1];
        drawLine(picture, px(xp), py(yp), px(x), py(y), rgb);
      }
      for (let dy = -2; dy <= 2; dy++) {
        drawLine(picture, px(x) - 2, py(y) + dy, px(x) + 2, py(y) + dy, rgb);
      }
    });
  });
  return picture;
}
