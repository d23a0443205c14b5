/**
 * Every output reaches its cell in a headless run: tests/notebooks/fixtures/cell_outputs.ipynb
 * ends each of twelve cells with a display (a picture of noise of 16, 64 or 256 pixels, then a
 * table). Without the pause in `show` after each display, the Deno kernel lets about one cell in
 * four announce its end before its last output, and nbconvert drops that output.
 */

import { assert } from "../assert.ts";
import { executeNotebook, missingJupyter } from "./run_notebook.ts";

const NOTEBOOK = new URL("./fixtures/cell_outputs.ipynb", import.meta.url).pathname;

Deno.test({
  name: "a notebook whose cells end with a display keeps every output when run headlessly",
  ignore: missingJupyter() !== undefined,
  async fn() {
    const { cells, log } = await executeNotebook(NOTEBOOK);
    const shown = cells.slice(1).map((c) =>
      (c.outputs ?? []).map((o) => Object.keys(o.data ?? {}).join("+")).join(", ")
    );
    const expected = Array(12).fill("image/png+text/plain, text/html+text/plain");
    assert.deepEqual(shown, expected, `nbconvert's log:\n${log}`);
    const tables = cells.slice(1).map((c) => c.outputs?.[1]?.data?.["text/plain"]);
    assert.deepEqual(
      tables.map((t) => (Array.isArray(t) ? t.join("") : t)?.split("\n").pop()),
      Array.from({ length: 12 }, (_, i) => String(i)),
      "each table in its own cell",
    );
  },
});
