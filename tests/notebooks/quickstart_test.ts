/**
 * Executes notebooks/quickstart.ipynb headlessly with the Deno kernel (`jupyter nbconvert
 * --execute`), when Jupyter's nbconvert and the kernel are installed; otherwise the test is
 * ignored with a message.
 */

import { join } from "node:path";
import { assert } from "../assert.ts";

const NOTEBOOK = new URL("../../notebooks/quickstart.ipynb", import.meta.url).pathname;

/** Why the notebook cannot run here, or undefined when it can. */
function missingJupyter(): string | undefined {
  const run = (args: string[]) => {
    try {
      const out = new Deno.Command("jupyter", { args, stdout: "piped", stderr: "null" })
        .outputSync();
      return out.success ? new TextDecoder().decode(out.stdout) : undefined;
    } catch {
      return undefined; // jupyter is not on the PATH
    }
  };
  if (run(["nbconvert", "--version"]) === undefined) {
    return "jupyter nbconvert is not installed (apt-get install jupyter-nbconvert python3-nbclient jupyter-client)";
  }
  const specs = run(["kernelspec", "list", "--json"]);
  if (specs === undefined || !("deno" in JSON.parse(specs).kernelspecs)) {
    return "the Deno kernel is not registered (deno jupyter --install)";
  }
  return undefined;
}

const missing = missingJupyter();
if (missing) console.log(`Notebook test skipped: ${missing}`);

interface Output {
  output_type: string;
  data?: Record<string, string | string[]>;
  text?: string | string[];
  ename?: string;
  evalue?: string;
}

interface Cell {
  cell_type: string;
  source: string | string[];
  outputs?: Output[];
}

const joined = (text: string | string[] | undefined) =>
  Array.isArray(text) ? text.join("") : text ?? "";

Deno.test({
  name: "notebooks/quickstart.ipynb runs headlessly: pictures, a live plot, tables, no errors",
  ignore: missing !== undefined,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "ibot_notebook_test_" });
    try {
      const { code, stderr } = await new Deno.Command("jupyter", {
        args: [
          "nbconvert",
          "--to",
          "notebook",
          "--execute",
          "--ExecutePreprocessor.kernel_name=deno",
          "--ExecutePreprocessor.timeout=600",
          "--output-dir",
          dir,
          NOTEBOOK,
        ],
        stdout: "null",
        stderr: "piped",
      }).output();
      const log = new TextDecoder().decode(stderr);
      assert.equal(code, 0, `nbconvert failed:\n${log.slice(-3000)}`);

      const cells: Cell[] = JSON.parse(await Deno.readTextFile(join(dir, "quickstart.ipynb")))
        .cells;
      const codeCells = cells.filter((c) => c.cell_type === "code");
      const outputs = codeCells.flatMap((c) => c.outputs ?? []);
      const errors = outputs.filter((o) => o.output_type === "error");
      assert.deepEqual(errors.map((o) => `${o.ename}: ${o.evalue}`), []);
      const mimes = outputs.flatMap((o) => Object.keys(o.data ?? {}));
      // The crops grid, the attention maps and the pattern grids are PNG pictures.
      assert.ok(mimes.filter((m) => m === "image/png").length >= 3, `outputs: ${mimes}`);
      assert.ok(mimes.includes("text/html"), "the tables are HTML");

      // The live plot was updated in place: one SVG output holding a point per iteration.
      const training = codeCells.find((c) => joined(c.source).includes("new LivePlot"))!;
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
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
