/**
 * Executes notebooks/quickstart.ipynb headlessly with the Deno kernel (`jupyter nbconvert
 * --execute`), when Jupyter's nbconvert and the kernel are installed; otherwise the test is
 * ignored with a message.
 */

import { assert } from "../assert.ts";
import { executeNotebook, joined, missingJupyter, outputMimes } from "./run_notebook.ts";

const NOTEBOOK = new URL("../../notebooks/quickstart.ipynb", import.meta.url).pathname;

Deno.test({
  name: "notebooks/quickstart.ipynb runs headlessly: pictures, a live plot, tables, no errors",
  ignore: missingJupyter() !== undefined,
  async fn() {
    const { cells, log } = await executeNotebook(NOTEBOOK);
    const mimes = outputMimes(cells);
    const outputs = cells.flatMap((c) => c.outputs ?? []);
    // The crops grid, the attention maps and the pattern grids are PNG pictures.
    assert.equal(
      mimes.filter((m) => m === "image/png").length,
      3,
      `outputs: ${mimes}\nnbconvert's log:\n${log}`,
    );
    assert.ok(mimes.includes("text/html"), "the tables are HTML");

    // The live plot was updated in place: one SVG output holding a point per iteration.
    const training = cells.find((c) => joined(c.source).includes("new LivePlot"))!;
    const svgs = training.outputs!.filter((o) => o.data?.["image/svg+xml"] !== undefined);
    assert.equal(svgs.length, 1, "one plot output, redrawn in place");
    const svg = joined(svgs[0].data!["image/svg+xml"]);
    const points = svg.match(/<polyline [^>]*points="([^"]*)"/)![1].split(" ");
    const printed = training.outputs!.map((o) => joined(o.text)).join("");
    const iterations = Number(printed.match(/Training finished: (\d+) iterations/)![1]);
    assert.ok(iterations > 0);
    assert.equal(points.length, iterations, "a loss point per iteration");

    const tables = outputs.map((o) => joined(o.data?.["text/plain"])).join("\n");
    assert.match(tables, /k-NN on 512 test images/);
  },
});
