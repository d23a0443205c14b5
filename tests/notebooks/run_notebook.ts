/**
 * Executes a notebook headlessly with the Deno kernel (`jupyter nbconvert --execute`) and reads
 * back its cells, for the notebook tests; tells why it cannot when Jupyter's nbconvert or the
 * kernel is not installed.
 */

import { basename, join } from "node:path";
import { assert } from "../assert.ts";
import { reportMissingTool } from "../missing_tool.ts";

/**
 * Why notebooks cannot run here, or undefined when they can. When they cannot, the notebook
 * tests are skipped with a note, or under `CI=true` a failing test gives the reason (see
 * `reportMissingTool`); call it where tests are registered, as their `ignore` option.
 */
export function missingJupyter(): string | undefined {
  const reason = jupyterProblem();
  if (reason) reportMissingTool("Notebook test", reason);
  return reason;
}

function jupyterProblem(): string | undefined {
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

/** One output of an executed cell, as nbformat stores it. */
export interface Output {
  output_type: string;
  data?: Record<string, string | string[]>;
  text?: string | string[];
  ename?: string;
  evalue?: string;
}

/** One cell of an executed notebook. */
export interface Cell {
  cell_type: string;
  source: string | string[];
  outputs?: Output[];
}

/** nbformat keeps long text as a list of lines; this joins them. */
export function joined(text: string | string[] | undefined): string {
  return Array.isArray(text) ? text.join("") : text ?? "";
}

/**
 * Executes the notebook at `path` (its own folder is the kernel's working directory) and returns
 * its code cells with their outputs, and nbconvert's log. Fails when nbconvert fails or a cell
 * raised an error.
 */
export async function executeNotebook(path: string): Promise<{ cells: Cell[]; log: string }> {
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
        path,
      ],
      stdout: "null",
      stderr: "piped",
    }).output();
    const log = new TextDecoder().decode(stderr);
    assert.equal(code, 0, `nbconvert failed:\n${log.slice(-3000)}`);
    const cells: Cell[] = JSON.parse(await Deno.readTextFile(join(dir, basename(path)))).cells;
    const codeCells = cells.filter((c) => c.cell_type === "code");
    const errors = codeCells.flatMap((c) => c.outputs ?? []).filter((o) =>
      o.output_type === "error"
    );
    assert.deepEqual(errors.map((o) => `${o.ename}: ${o.evalue}`), []);
    return { cells: codeCells, log };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The MIME types of each output of `cells`, in order. */
export function outputMimes(cells: readonly Cell[]): string[] {
  return cells.flatMap((c) => c.outputs ?? []).flatMap((o) => Object.keys(o.data ?? {}));
}
