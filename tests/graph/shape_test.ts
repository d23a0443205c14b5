import { assert, assertClose } from "../assert.ts";
import { checkGradients } from "./gradcheck.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { mul } from "../../lib/graph/math.ts";
import {
  concat,
  expand,
  gather,
  pad,
  reshape,
  roll,
  slice,
  split,
  squeeze,
  transpose,
  unsqueeze,
} from "../../lib/graph/shape.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";

Deno.test("reshape with an inferred axis", () =>
  checkGradients((x) => reshape(x, [3, -1]), [[2, 3, 2]]));
Deno.test("transpose", () => checkGradients((x) => transpose(x, [2, 0, 1]), [[2, 3, 4]]));
Deno.test("slice with negative indices", () =>
  checkGradients((x) => slice(x, [1, -3], [3, -1], [0, 2]), [[4, 2, 5]]));
Deno.test("pad", () => checkGradients((x) => pad(x, [1, 0, 2, 1], 0.5), [[2, 3]]));
Deno.test("concat", () => checkGradients((a, b) => concat([a, b, a], 1), [[2, 3], [2, 1]]));
Deno.test("split, with the pieces used twice", () =>
  checkGradients((x) => {
    const [a, b, c] = split(x, [1, 2, 1], 1);
    return concat([mul(a, c), b, a], 1);
  }, [[3, 4]]));
Deno.test("split with an unused piece", () =>
  checkGradients((x) => split(x, [2, 2], 0)[1], [[4, 3]]));
Deno.test("gather with repeated indices accumulates", () =>
  checkGradients((x) => {
    const idx = x.graph.constant([2, 0, 2, 1], "int64", [2, 2]);
    return gather(x, idx, 1);
  }, [[2, 3, 2]]));
Deno.test("gather on axis 0", () =>
  checkGradients((x) => gather(x, x.graph.constant([1, 1, 0], "int64", [3]), 0), [[2, 3]]));
Deno.test("expand", () => checkGradients((x) => expand(x, [2, 3, 4]), [[3, 1]]));
Deno.test("roll", () => checkGradients((x) => roll(roll(x, 1, 0), -2, 1), [[3, 4]]));
Deno.test("squeeze and unsqueeze", () =>
  checkGradients((x) => unsqueeze(squeeze(x, [1]), [0, -1]), [[2, 1, 3]]));

Deno.test("roll matches torch.roll semantics", async () => {
  const g = new Graph();
  const x = g.input("x", "float32", [5]);
  g.output("y", roll(x, 2, 0));
  g.output("z", roll(x, -1, 0));
  const out = await (await CompiledGraph.create(g)).run({ x: Float32Array.of(0, 1, 2, 3, 4) });
  assertClose(out.y as Float32Array, [3, 4, 0, 1, 2]);
  assertClose(out.z as Float32Array, [1, 2, 3, 4, 0]);
});

Deno.test("shape errors name the op, the shapes and the scope", () => {
  const g = new Graph();
  const x = g.input("x", "float32", [2, 3]);
  assert.throws(
    () => g.scope("backbone.blocks.0", () => reshape(x, [4, 2])),
    /reshape: cannot reshape x\[2,3\]:float32 \(6 elements\) to \[4,2\] \(in scope backbone\.blocks\.0\)/,
  );
  assert.throws(
    () => concat([x, g.input("y", "float32", [3, 3])], 1),
    /concat: cannot concatenate/,
  );
  assert.throws(() => transpose(x, [0, 0]), /transpose: perm \[0,0\] is not a permutation/);
});
