import { assert, assertClose } from "../assert.ts";
import { checkGradients } from "./gradcheck.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { maskedSoftmax } from "../../lib/graph/masked_softmax.ts";
import { add } from "../../lib/graph/math.ts";
import type { Tensor } from "../../lib/graph/tensor.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";

/** Keep pattern [2, 1, 4] (broadcast over the middle axis): row 0 drops entry 1, row 1 entries 0 and 3. */
const KEEP = [1, 0, 1, 1, 0, 1, 1, 0];

/** x plus −60 where KEEP is 0, through maskedSoftmax with KEEP. */
function masked(x: Tensor): Tensor {
  const g = x.graph;
  const offsets = g.constant(KEEP.map((k) => k ? 0 : -60), x.dtype, [2, 1, 4]);
  return maskedSoftmax(add(x, offsets), g.constant(KEEP, "bool", [2, 1, 4]));
}

Deno.test("maskedSoftmax is the softmax over the kept entries and exactly 0 elsewhere", async () => {
  const g = new Graph();
  const x = g.input("x", "float32", [2, 3, 4]);
  g.output("y", masked(x));
  const session = await CompiledGraph.create(g, { threads: 1 });
  const values = Float32Array.from({ length: 24 }, (_, i) => Math.sin(i) * 3);
  const y = (await session.run({ x: values })).y as Float32Array;
  const expected = Array.from(values, (_, i) => {
    const [row, base] = [Math.floor(i / 12), i - (i % 4)];
    const kept = [0, 1, 2, 3].filter((j) => KEEP[row * 4 + j]);
    const total = kept.reduce((s, j) => s + Math.exp(values[base + j]), 0);
    return KEEP[row * 4 + (i % 4)] ? Math.exp(values[i]) / total : 0;
  });
  assertClose(y, expected, 1e-6, 0);
  y.forEach((v, i) => {
    if (expected[i] === 0) assert.equal(v, 0);
  });
  await session.release();
});

Deno.test("maskedSoftmax: gradients", () => checkGradients(masked, [[2, 3, 4]]));

Deno.test("maskedSoftmax refuses a keep mask that is not bool or does not broadcast", () => {
  const g = new Graph();
  const x = g.input("x", "float32", [2, 4]);
  assert.throws(
    () => maskedSoftmax(x, g.constant([1, 0, 1, 1], "float32", [4])),
    /maskedSoftmax: keep .* must be bool/,
  );
  assert.throws(
    () => maskedSoftmax(x, g.constant(new Array(16).fill(1), "bool", [2, 2, 4])),
    /maskedSoftmax: keep .* must broadcast to the shape of x\[2,4\]/,
  );
});
