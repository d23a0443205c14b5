import { join } from "node:path";
import { assert } from "../assert.ts";
import { drawLinePlot, PLOT_COLOURS } from "../../lib/analysis/line_plot.ts";
import { savePng } from "../../lib/analysis/picture.ts";
import { withTempDir } from "../data/fixtures.ts";
import { pixel, readPng } from "./blocks.ts";

Deno.test("drawLinePlot: a PNG of the asked size with the axes, the grid and both series", async () => {
  await withTempDir(async (dir) => {
    const picture = drawLinePlot([
      { points: [[0, 90], [0.5, 50], [1, 10]] },
      { points: [[0, 20], [1, 80]] },
    ], { width: 300, height: 200, xRange: [0, 1] });
    const path = join(dir, "curve.png");
    await savePng(path, picture);
    const back = await readPng(path);
    assert.equal(back.width, 300);
    assert.equal(back.height, 200);
    const colours = new Set<string>();
    for (let y = 0; y < back.height; y++) {
      for (let x = 0; x < back.width; x++) colours.add(pixel(back, x, y).join(","));
    }
    for (const colour of ["255,255,255", "0,0,0", "225,225,225", ...PLOT_COLOURS.slice(0, 2)]) {
      assert(colours.has(String(colour)), `the picture has no ${colour} pixel`);
    }
    // The axes: the left edge of the plot area (x = 24) and its bottom (y = 200 − 24).
    assert.deepEqual(pixel(back, 24, 100), [0, 0, 0]);
    assert.deepEqual(pixel(back, 150, 176), [0, 0, 0]);
    // The first series starts at (0, 90 %): x = 24, y = 176 − 0.9·152 ≈ 39.2.
    assert.deepEqual(pixel(back, 24, 39), [...PLOT_COLOURS[0]]);
    // The second series ends at (1, 80 %): x = 276, y = 176 − 0.8·152 ≈ 54.4.
    assert.deepEqual(pixel(back, 276, 54), [...PLOT_COLOURS[1]]);
  });
});

Deno.test("drawLinePlot: a plot too small for its margins is refused", () => {
  assert.throws(() => drawLinePlot([], { width: 40, height: 200 }), /more than 48 pixels/);
});
