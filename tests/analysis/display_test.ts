import { Buffer } from "node:buffer";
import sharp from "sharp";
import { assert } from "../assert.ts";
import {
  escapeHtml,
  inKernel,
  linePlotPng,
  linePlotSvg,
  LivePlot,
  niceTicks,
  pictureBundle,
  pictureGrid,
  PLOT_MARGINS,
  plotBundle,
  plotPngBundle,
  tableBundle,
} from "../../lib/analysis/display.ts";
import { blankPicture } from "../../lib/analysis/picture.ts";
import type { RawImage } from "../../lib/data/source.ts";

/** The `points` attribute of every polyline of an SVG, in order. */
function polylinePoints(svg: string): string[] {
  return [...svg.matchAll(/<polyline [^>]*points="([^"]*)"/g)].map((m) => m[1]);
}

/** A picture whose pixel (x, y) is (x, y, 7). */
function gradient(width: number, height: number): RawImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) data.set([x, y, 7], 3 * (y * width + x));
  }
  return { data, width, height };
}

Deno.test("linePlotSvg: polyline points map the data range onto the plot area", () => {
  const { left, right, top, bottom } = PLOT_MARGINS;
  const width = left + right + 200;
  const height = top + bottom + 100;
  const svg = linePlotSvg([
    { name: "loss", x: [0, 1, 2, 4], y: [3, 1, 2, 1] },
    { name: "cls", x: [0, 4], y: [NaN, 2] },
  ], { width, height, title: "a < b" });
  // x spans 0–4 over 200 px, y spans 1–3 over 100 px (3 at the top); NaN points are skipped.
  assert.deepEqual(polylinePoints(svg), [
    `${left},${top} ${left + 50},${top + 100} ${left + 100},${top + 50} ${left + 200},${top + 100}`,
    `${left + 200},${top + 50}`,
  ]);
  assert.match(svg, new RegExp(`^<svg xmlns="http://www.w3.org/2000/svg" width="${width}"`));
  assert.match(svg, />a &lt; b<\/text>/);
  assert.match(svg, />loss<\/text>/);
  // y tick labels run 1, 1.5, 2, 2.5, 3 and x tick labels 0, 1, 2, 3, 4.
  for (const label of ["1.5", "2.5", "3", "4"]) assert.match(svg, new RegExp(`>${label}</text>`));
});

Deno.test("linePlotSvg: one value is widened by ±0.5 and mismatched series are refused", () => {
  const { left, top } = PLOT_MARGINS;
  const svg = linePlotSvg([{ name: "flat", x: [5], y: [2] }], { width: 272, height: 168 });
  // x range [4.5, 5.5] and y range [1.5, 2.5]: the point sits in the middle of the 200×100 area.
  assert.deepEqual(polylinePoints(svg), [`${left + 100},${top + 50}`]);
  assert.throws(() => linePlotSvg([{ name: "bad", x: [1, 2], y: [1] }]), /2 x values and 1 y/);
});

Deno.test("niceTicks: multiples of 1, 2 or 5 × 10^k inside the range", () => {
  assert.deepEqual(niceTicks(1, 64), [20, 40, 60]);
  assert.deepEqual(niceTicks(2.37, 9.48), [4, 6, 8]);
  assert.deepEqual(niceTicks(-0.5, 0.5), [-0.5, 0, 0.5]);
  assert.deepEqual(niceTicks(0.1, 0.3), [0.1, 0.15, 0.2, 0.25, 0.3]);
});

Deno.test("plotBundle: SVG and a plain-text summary of the last points", () => {
  const bundle = plotBundle([{ name: "loss", x: [1, 2], y: [0.5, 0.25] }], { title: "training" });
  assert.equal(bundle["text/plain"], "training\n  loss 0.25 at 2");
  assert.equal(polylinePoints(bundle["image/svg+xml"]).length, 1);
});

Deno.test("linePlotPng: the plot rasterised at its size, the line in its colour on white", async () => {
  const { left, right, top, bottom } = PLOT_MARGINS;
  const [width, height] = [left + right + 200, top + bottom + 100];
  const series = [{ name: "flat", x: [0, 10], y: [2, 2], color: "#ff0000" }];
  const png = await linePlotPng(series, { width, height });
  const { data, info } = await sharp(png).removeAlpha().raw().toBuffer({
    resolveWithObject: true,
  });
  assert.deepEqual([info.width, info.height], [width, height]);
  const pixel = (
    x: number,
    y: number,
  ) => [...data.subarray(3 * (y * width + x), 3 * (y * width + x) + 3)];
  // The flat series lies across the middle of the plot area (its range is widened to 2 ± 0.5):
  // in the area's middle column, the red pixels (antialiased, 1.5 px wide) are at y = top + 50.
  const red = [];
  for (let y = top + 2; y < top + 99; y++) {
    const [r, g, b] = pixel(left + 100, y);
    if (r === 255 && g < 160 && b < 160) red.push(y - top);
    else assert.deepEqual([r, g, b], [255, 255, 255], `pixel (${left + 100}, ${y})`);
  }
  assert.deepEqual(red, [49, 50]);
  assert.deepEqual(pixel(2, height - 2), [255, 255, 255]);

  const bundle = await plotPngBundle(series, { width, height, title: "t" });
  assert.equal(bundle["text/plain"], "t\n  flat 2 at 10");
  const decoded = await sharp(Buffer.from(bundle["image/png"], "base64")).metadata();
  assert.deepEqual([decoded.width, decoded.height], [width, height]);
});

Deno.test("tableBundle: cells are escaped, numbers rounded, columns aligned", () => {
  const bundle = tableBundle(["name", "top-1 %"], [["<b>&'x'\"", 71.23456], ["k=20", 3]], "k-NN");
  assert.equal(
    bundle["text/html"],
    "<table><caption>k-NN</caption><thead><tr><th>name</th><th>top-1 %</th></tr></thead>" +
      "<tbody><tr><td>&lt;b&gt;&amp;&#39;x&#39;&quot;</td><td>71.23</td></tr>" +
      "<tr><td>k=20</td><td>3</td></tr></tbody></table>",
  );
  assert.equal(
    bundle["text/plain"],
    [
      "k-NN",
      "name      top-1 %",
      "--------  -------",
      "<b>&'x'\"  71.23",
      "k=20      3",
    ].join("\n"),
  );
  assert.equal(escapeHtml("a&b"), "a&amp;b");
});

Deno.test("pictureBundle: the PNG decodes to the upscaled size and pixels", async () => {
  const bundle = await pictureBundle(gradient(3, 2), { scale: 4 });
  assert.equal(bundle["text/plain"], "picture 12×8");
  const png = Buffer.from(bundle["image/png"], "base64");
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  assert.deepEqual([info.width, info.height, info.channels], [12, 8, 3]);
  // Nearest-neighbour upscaling: output pixel (9, 5) comes from source pixel (2, 1).
  assert.deepEqual([...data.subarray(3 * (5 * 12 + 9), 3 * (5 * 12 + 9) + 3)], [2, 1, 7]);
  await assert.rejects(pictureBundle(gradient(1, 1), { scale: 1.5 }), /positive integer/);
});

Deno.test("pictureGrid: cells sit at their column and row offsets", () => {
  const red = blankPicture(2, 3, [255, 0, 0]);
  const green = blankPicture(4, 1, [0, 255, 0]);
  const blue = blankPicture(1, 1, [0, 0, 255]);
  const grid = pictureGrid([[red, green], [blue]], { gap: 1, background: [9, 9, 9] });
  // Columns 2 and 4 px wide, rows 3 and 1 px tall, 1 px gaps: 7×5.
  assert.deepEqual([grid.width, grid.height], [7, 5]);
  const at = (
    x: number,
    y: number,
  ) => [...grid.data.subarray(3 * (y * 7 + x), 3 * (y * 7 + x) + 3)];
  assert.deepEqual(at(1, 2), [255, 0, 0]);
  assert.deepEqual(at(3, 0), [0, 255, 0]);
  assert.deepEqual(at(3, 1), [9, 9, 9]);
  assert.deepEqual(at(0, 4), [0, 0, 255]);
  assert.deepEqual(at(2, 0), [9, 9, 9]);
  assert.throws(() => pictureGrid([]), /at least one picture/);
});

Deno.test("LivePlot: outside a kernel it records the series without displaying", async () => {
  assert.equal(inKernel(), false);
  const plot = new LivePlot({ title: "loss" });
  await plot.add(1, { loss: 2, cls: 1 });
  await plot.add(2, { loss: 1.5, cls: 0.75 });
  assert.deepEqual(plot.series, [
    { name: "loss", x: [1, 2], y: [2, 1.5] },
    { name: "cls", x: [1, 2], y: [1, 0.75] },
  ]);
});
