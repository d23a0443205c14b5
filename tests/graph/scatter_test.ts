import { assert, assertClose } from "../assert.ts";
import { checkGradients } from "./gradcheck.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { gatherElements, scatterAdd } from "../../lib/graph/scatter.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";

Deno.test("gatherElements and scatterAdd compute torch.gather and scatter_add_", async () => {
  const g = new Graph();
  const x = g.input("x", "float32", [2, 3]);
  const indices = g.constant([2, 2, 0, 1, 0, 1, 1, 1], "int64", [2, 4]);
  const updates = g.input("u", "float32", [2, 4]);
  g.output("gathered", gatherElements(x, indices, 1));
  g.output("scattered", scatterAdd(x, indices, updates, -1));
  const out = await (await CompiledGraph.create(g)).run({
    x: Float32Array.of(1, 2, 3, 4, 5, 6),
    u: Float32Array.of(10, 20, 30, 40, 100, 200, 300, 400),
  });
  assertClose(out.gathered as Float32Array, [3, 3, 1, 2, 4, 5, 5, 5]);
  // Row 0: +30 at 0, +40 at 1, +10 +20 at 2. Row 1: +100 at 0, +200 +300 +400 at 1.
  assertClose(out.scattered as Float32Array, [31, 42, 33, 104, 905, 6]);
});

Deno.test("gatherElements with repeated indices accumulates its gradient", () =>
  checkGradients((x) => {
    const idx = x.graph.constant([2, 0, 2, 1, 1, 1], "int64", [3, 2]);
    return gatherElements(x, idx, 0);
  }, [[3, 2]]));

Deno.test("scatterAdd passes gradients to data and updates", () =>
  checkGradients((data, updates) => {
    const idx = data.graph.constant([0, 3, 3, 1, 2, 2], "int64", [2, 3]);
    return scatterAdd(data, idx, updates, 1);
  }, [[2, 4], [2, 3]]));

Deno.test("gatherElements and scatterAdd reject mismatched indices", () => {
  const g = new Graph();
  const x = g.input("x", "float32", [2, 3]);
  assert.throws(
    () => gatherElements(x, g.constant([0, 1], "int64", [1, 2]), 1),
    /must match x\[2,3\]:float32 on every axis but 1/,
  );
  assert.throws(
    () => scatterAdd(x, g.constant([0, 1], "int64", [2, 1]), x, 1),
    /updates x\[2,3\]:float32 must have the shape of/,
  );
  assert.throws(
    () => gatherElements(x, g.constant([0, 1], "float32", [2, 1]), 1),
    /indices must be int64/,
  );
});
