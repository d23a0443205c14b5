/**
 * Rich output for notebooks run by the Deno Jupyter kernel (`deno jupyter`): pure builders of
 * display bundles (a picture as PNG, a grid of pictures, an HTML table, a line plot as SVG or
 * PNG) and thin `show*` wrappers that display a bundle inside a kernel (and wait until it is on its
 * way, so that headless runs record it) and print its plain-text form elsewhere.
 * A {@link LivePlot} redraws one output in place as points arrive (`update_display_data` on a
 * display id).
 *
 * ```ts
 * import { LivePlot, showTable } from "./display.ts";
 * await showTable(["k", "top-1 %"], [[10, 71.5], [20, 72.25]]);
 * const plot = new LivePlot({ title: "loss", xLabel: "iteration" });
 * for (let i = 0; i < 3; i++) await plot.add(i, { loss: 1 / (i + 1) });
 * ```
 *
 * @module
 */

import { Buffer } from "node:buffer";
import sharp from "sharp";
import type { RawImage } from "../data/source.ts";
import { blankPicture, encodePng, enlargePicture, pastePicture } from "./picture.ts";

/** A Jupyter MIME bundle: MIME type → data (base64 for images). */
export type DisplayBundle = Readonly<Record<string, string>>;

/** Whether this code runs inside the Deno Jupyter kernel (where `Deno.jupyter` exists). */
export function inKernel(): boolean {
  try {
    return typeof Deno.jupyter?.display === "function";
  } catch {
    // Outside `deno jupyter`, reading Deno.jupyter throws.
    return false;
  }
}

/** Where a bundle goes: a new output, or an update of the output with the same display id. */
export interface ShowOptions {
  /** Tags the output so that later calls with `update` replace it. */
  readonly displayId?: string;
  /** Replace the output tagged `displayId` instead of adding one. */
  readonly update?: boolean;
}

/**
 * Displays a bundle in the kernel; outside a kernel prints its `text/plain` form (updates print
 * nothing there, so a live plot does not flood a terminal).
 */
export async function show(bundle: DisplayBundle, options: ShowOptions = {}): Promise<void> {
  if (inKernel()) {
    await Deno.jupyter.display(bundle, {
      raw: true,
      display_id: options.displayId,
      update: options.update ?? false,
    });
    await outputSent();
  } else if (!options.update) {
    console.log(bundle["text/plain"] ?? "");
  }
}

/**
 * Yields to the event loop once. In the Deno kernel an output can otherwise reach the client after
 * the end of its cell (one cell in four that end with a display, in our measurements), and headless
 * runs (nbconvert) drop outputs that arrive after their cell's end.
 */
async function outputSent(): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 0));
}

/** Escapes `& < > " '` for HTML and SVG text and attributes. */
export function escapeHtml(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;").replaceAll("'", "&#39;");
}

// ---------------------------------------------------------------------------------------------
// Pictures

/** Options of {@link pictureBundle} and {@link showPicture}. */
export interface PictureOptions {
  /**
   * Integer upscaling factor, nearest neighbour (default 1: the analysis pictures come enlarged to
   * a readable size already; other small pictures are hard to see at 1:1).
   */
  readonly scale?: number;
}

/** A picture as a PNG bundle (`image/png` base64, `text/plain` its size), upscaled by `scale`. */
export async function pictureBundle(
  picture: RawImage,
  options: PictureOptions = {},
): Promise<DisplayBundle> {
  const scale = options.scale ?? 1;
  if (!Number.isInteger(scale) || scale < 1) {
    throw new Error(`the picture scale must be a positive integer, got ${scale}`);
  }
  const shown = enlargePicture(picture, scale);
  return {
    "image/png": Buffer.from(await encodePng(shown)).toString("base64"),
    "text/plain": `picture ${shown.width}×${shown.height}`,
  };
}

/** Shows a picture (see {@link pictureBundle}). */
export async function showPicture(picture: RawImage, options: PictureOptions = {}): Promise<void> {
  await show(await pictureBundle(picture, options));
}

/** Options of {@link pictureGrid}. */
export interface GridOptions {
  /** Pixels between cells (default 2). */
  readonly gap?: number;
  /** RGB of the gaps and of the space around smaller cells (default white). */
  readonly background?: readonly number[];
}

/**
 * Pictures laid out in rows: column c is as wide as its widest cell, row r as tall as its tallest;
 * each cell sits at the top-left of its slot, `gap` pixels between slots. Rows may differ in
 * length.
 */
export function pictureGrid(
  rows: readonly (readonly RawImage[])[],
  options: GridOptions = {},
): RawImage {
  const gap = options.gap ?? 2;
  const columns = Math.max(0, ...rows.map((row) => row.length));
  if (columns === 0) throw new Error("a picture grid needs at least one picture");
  const widths = Array.from(
    { length: columns },
    (_, c) => Math.max(0, ...rows.map((row) => row[c]?.width ?? 0)),
  );
  const heights = rows.map((row) => Math.max(0, ...row.map((p) => p.height)));
  const offsets = (sizes: number[]) =>
    sizes.map((_, i) => sizes.slice(0, i).reduce((a, b) => a + b + gap, 0));
  const left = offsets(widths);
  const top = offsets(heights);
  const out = blankPicture(
    left[columns - 1] + widths[columns - 1],
    top[rows.length - 1] + heights[rows.length - 1],
    options.background ?? [255, 255, 255],
  );
  rows.forEach((row, r) =>
    row.forEach((picture, c) => pastePicture(out, picture, left[c], top[r]))
  );
  return out;
}

/** Shows pictures in rows (see {@link pictureGrid} and {@link pictureBundle}). */
export async function showGrid(
  rows: readonly (readonly RawImage[])[],
  options: GridOptions & PictureOptions = {},
): Promise<void> {
  await show(await pictureBundle(pictureGrid(rows, options), options));
}

// ---------------------------------------------------------------------------------------------
// Tables

/** A table cell: text as given, numbers with at most 4 significant digits. */
export type Cell = string | number;

function formatCell(cell: Cell): string {
  if (typeof cell === "string") return cell;
  return Number.isInteger(cell) ? String(cell) : String(Number(cell.toPrecision(4)));
}

/**
 * A table as an HTML bundle (`text/html` with every cell escaped, `text/plain` with aligned
 * columns). Rows shorter than the header get empty cells.
 */
export function tableBundle(
  header: readonly string[],
  rows: readonly (readonly Cell[])[],
  caption?: string,
): DisplayBundle {
  const cells = rows.map((row) => header.map((_, c) => c < row.length ? formatCell(row[c]) : ""));
  const tr = (values: string[], tag: "th" | "td") =>
    `<tr>${values.map((v) => `<${tag}>${escapeHtml(v)}</${tag}>`).join("")}</tr>`;
  const html = [
    "<table>",
    caption === undefined ? "" : `<caption>${escapeHtml(caption)}</caption>`,
    `<thead>${tr([...header], "th")}</thead>`,
    `<tbody>${cells.map((row) => tr(row, "td")).join("")}</tbody>`,
    "</table>",
  ].join("");
  const widths = header.map((h, c) => Math.max(h.length, ...cells.map((row) => row[c].length)));
  const line = (values: readonly string[]) =>
    values.map((v, c) => v.padEnd(widths[c])).join("  ").trimEnd();
  const text = [
    ...(caption === undefined ? [] : [caption]),
    line(header),
    line(widths.map((w) => "-".repeat(w))),
    ...cells.map(line),
  ].join("\n");
  return { "text/html": html, "text/plain": text };
}

/** Shows a table (see {@link tableBundle}). */
export async function showTable(
  header: readonly string[],
  rows: readonly (readonly Cell[])[],
  caption?: string,
): Promise<void> {
  await show(tableBundle(header, rows, caption));
}

// ---------------------------------------------------------------------------------------------
// Line plots

/** One line of a plot: points (x[i], y[i]); non-finite points are skipped. */
export interface PlotSeries {
  /** Legend label. */
  readonly name: string;
  /** Abscissae. */
  readonly x: readonly number[];
  /** Ordinates, as many as `x`. */
  readonly y: readonly number[];
  /** CSS colour (default: the palette colour of the series' position). */
  readonly color?: string;
}

/** Size and labels of a plot. */
export interface PlotOptions {
  /** SVG width in pixels (default 480). */
  readonly width?: number;
  /** SVG height in pixels (default 280). */
  readonly height?: number;
  /** Title above the plot. */
  readonly title?: string;
  /** Label under the x axis. */
  readonly xLabel?: string;
  /** Label left of the y axis. */
  readonly yLabel?: string;
}

/**
 * Space in pixels between the SVG border and the plot area. The x axis spans the smallest to the
 * largest finite x across all series, left to right edge of the area; the y axis likewise from the
 * bottom to the top edge (a range of one value v becomes [v − 0.5, v + 0.5]).
 */
export const PLOT_MARGINS = { left: 56, right: 16, top: 28, bottom: 40 } as const;

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"];
/** Wanted tick intervals per axis. */
const TICK_INTERVALS = 4;
/** Approximate width of one legend character in pixels (11 px sans-serif). */
const CHAR_WIDTH = 6.5;

/** Rounds a pixel coordinate to 2 decimals. */
function px(v: number): number {
  return Math.round(v * 100) / 100;
}

/** Tick label: at most 3 significant digits. */
function tickLabel(v: number): string {
  return String(Number(v.toPrecision(3)));
}

/**
 * Tick values inside [low, high]: the multiples of a round step (1, 2 or 5 × 10^k) near
 * (high − low) / 4; just `low` when the range is empty.
 */
export function niceTicks(low: number, high: number): number[] {
  if (!(high > low)) return [low];
  const raw = (high - low) / TICK_INTERVALS;
  const power = 10 ** Math.floor(Math.log10(raw));
  const fraction = raw / power;
  const step = (fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10) * power;
  const ticks: number[] = [];
  for (let k = Math.ceil(low / step - 1e-9); k * step <= high + 1e-9 * step; k++) {
    ticks.push(Number((k * step).toPrecision(12)));
  }
  return ticks;
}

/** [min, max] of the finite values, widened to [v − 0.5, v + 0.5] for one value, [0, 1] for none. */
function range(values: number[]): [number, number] {
  const finite = values.filter(Number.isFinite);
  if (finite.length === 0) return [0, 1];
  const low = finite.reduce((a, b) => Math.min(a, b));
  const high = finite.reduce((a, b) => Math.max(a, b));
  return low === high ? [low - 0.5, high + 0.5] : [low, high];
}

/**
 * An SVG line plot: axes with round ticks ({@link niceTicks}), one polyline per series
 * (`points="x,y x,y ..."` in pixels, see {@link PLOT_MARGINS}), the title and a legend along the
 * top, and the axis labels.
 */
export function linePlotSvg(series: readonly PlotSeries[], options: PlotOptions = {}): string {
  const width = options.width ?? 480;
  const height = options.height ?? 280;
  const { left, right, top, bottom } = PLOT_MARGINS;
  const areaWidth = width - left - right;
  const areaHeight = height - top - bottom;
  const finitePoint = (s: PlotSeries, i: number) =>
    Number.isFinite(s.x[i]) && Number.isFinite(s.y[i]);
  for (const s of series) {
    if (s.x.length !== s.y.length) {
      throw new Error(
        `plot series ${s.name} has ${s.x.length} x values and ${s.y.length} y values`,
      );
    }
  }
  const [x0, x1] = range(series.flatMap((s) => s.x.filter((_, i) => finitePoint(s, i))));
  const [y0, y1] = range(series.flatMap((s) => s.y.filter((_, i) => finitePoint(s, i))));
  const toX = (x: number) => px(left + (x - x0) / (x1 - x0) * areaWidth);
  const toY = (y: number) => px(top + (1 - (y - y0) / (y1 - y0)) * areaHeight);
  const text = (x: number, y: number, anchor: string, content: string, extra = "") =>
    `<text x="${px(x)}" y="${px(y)}" text-anchor="${anchor}"${extra}>${escapeHtml(content)}</text>`;

  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<rect x="${left}" y="${top}" width="${areaWidth}" height="${areaHeight}" fill="none" stroke="#888"/>`,
  ];
  for (const value of niceTicks(x0, x1)) {
    const x = toX(value);
    const y = top + areaHeight;
    parts.push(
      `<line x1="${x}" y1="${y}" x2="${x}" y2="${y + 4}" stroke="#888"/>`,
      text(x, y + 15, "middle", tickLabel(value)),
    );
  }
  for (const value of niceTicks(y0, y1)) {
    const y = toY(value);
    parts.push(
      `<line x1="${left - 4}" y1="${y}" x2="${left}" y2="${y}" stroke="#888"/>`,
      text(left - 6, y + 4, "end", tickLabel(value)),
    );
  }
  // The legend runs along the top margin, right-aligned with the plot area.
  const entryWidth = (s: PlotSeries) => 24 + CHAR_WIDTH * s.name.length;
  let lx = left + areaWidth - series.reduce((sum, s) => sum + entryWidth(s), 0);
  series.forEach((s, k) => {
    const color = escapeHtml(s.color ?? PALETTE[k % PALETTE.length]);
    const coords = s.x.map((_, i) => i).filter((i) => finitePoint(s, i))
      .map((i) => `${toX(s.x[i])},${toY(s.y[i])}`);
    parts.push(
      `<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${coords.join(" ")}"/>`,
      `<line x1="${px(lx)}" y1="14" x2="${
        px(lx + 16)
      }" y2="14" stroke="${color}" stroke-width="2"/>`,
      text(lx + 20, 18, "start", s.name),
    );
    lx += entryWidth(s);
  });
  if (options.title) parts.push(text(left, 18, "start", options.title, ' font-size="13"'));
  if (options.xLabel) parts.push(text(left + areaWidth / 2, height - 6, "middle", options.xLabel));
  if (options.yLabel) {
    const cy = top + areaHeight / 2;
    parts.push(text(14, cy, "middle", options.yLabel, ` transform="rotate(-90 14 ${px(cy)})"`));
  }
  parts.push("</svg>");
  return parts.join("");
}

/** The `text/plain` form of a plot: its title and each series' last point. */
function plotSummary(series: readonly PlotSeries[], options: PlotOptions): string {
  const last = series.map((s) => {
    const n = s.x.length;
    return n === 0 ? `${s.name}: no points` : `${s.name} ${tickLabel(s.y[n - 1])} at ${s.x[n - 1]}`;
  });
  return [options.title ?? "plot", ...last].join("\n  ");
}

/**
 * A plot as an SVG bundle; `text/plain` gives the title and each series' last point, which is
 * what a terminal shows.
 */
export function plotBundle(
  series: readonly PlotSeries[],
  options: PlotOptions = {},
): DisplayBundle {
  return {
    "image/svg+xml": linePlotSvg(series, options),
    "text/plain": plotSummary(series, options),
  };
}

/**
 * The plot of {@link linePlotSvg} as PNG bytes, width × height pixels (rasterised by sharp; text
 * needs a sans-serif font installed), for viewers without SVG and for files.
 */
export async function linePlotPng(
  series: readonly PlotSeries[],
  options: PlotOptions = {},
): Promise<Uint8Array> {
  const svg = new TextEncoder().encode(linePlotSvg(series, options));
  const buffer = await sharp(svg).png().toBuffer();
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

/** A plot as a PNG bundle (see {@link linePlotPng}), with the text of {@link plotBundle}. */
export async function plotPngBundle(
  series: readonly PlotSeries[],
  options: PlotOptions = {},
): Promise<DisplayBundle> {
  return {
    "image/png": Buffer.from(await linePlotPng(series, options)).toString("base64"),
    "text/plain": plotSummary(series, options),
  };
}

/** Options of {@link showPlot}: the plot's, and the picture format. */
export interface ShowPlotOptions extends PlotOptions {
  /** `svg` (default: crisp at any zoom) or `png` (for viewers that do not show SVG). */
  readonly format?: "svg" | "png";
}

/** Shows a line plot (see {@link linePlotSvg} and {@link linePlotPng}). */
export async function showPlot(
  series: readonly PlotSeries[],
  options: ShowPlotOptions = {},
): Promise<void> {
  await show(
    options.format === "png" ? await plotPngBundle(series, options) : plotBundle(series, options),
  );
}

/**
 * A line plot that redraws itself in place: the first {@link LivePlot.add} displays it, each later
 * one replaces that output. Outside a kernel it only records points; {@link LivePlot.show} then
 * prints the last values.
 */
export class LivePlot {
  readonly #series = new Map<string, { x: number[]; y: number[] }>();
  readonly #displayId = `live-plot-${crypto.randomUUID()}`;
  #shown = false;

  /** A plot with these size and labels; series appear as {@link LivePlot.add} names them. */
  constructor(readonly options: PlotOptions = {}) {}

  /** The series so far, in the order they were first named. */
  get series(): PlotSeries[] {
    return [...this.#series].map(([name, { x, y }]) => ({ name, x: [...x], y: [...y] }));
  }

  /** Adds the point (x, value) to each named series and redraws (in a kernel). */
  async add(x: number, values: Readonly<Record<string, number>>): Promise<void> {
    for (const [name, value] of Object.entries(values)) {
      let s = this.#series.get(name);
      if (!s) this.#series.set(name, s = { x: [], y: [] });
      s.x.push(x);
      s.y.push(value);
    }
    if (inKernel()) await this.show();
  }

  /** Draws the plot in a kernel (a new output the first time, then in place of it), else prints it. */
  async show(): Promise<void> {
    await show(plotBundle(this.series, this.options), {
      displayId: this.#displayId,
      update: this.#shown && inKernel(),
    });
    this.#shown = true;
  }
}
