import { assertClose } from "../assert.ts";
import { checkGradients } from "./gradcheck.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { argMax, l2Norm, max, mean, sum, topK } from "../../lib/graph/reduce.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";

Deno.test("sum over axes", () => checkGradients((x) => sum(x, [0, 2]), [[2, 3, 4]]));
Deno.test("sum keepdims", () => checkGradients((x) => sum(x, [-1], true), [[2, 3]]));
Deno.test("mean over all axes", () => checkGradients((x) => mean(x), [[3, 4]]));
Deno.test("mean keepdims", () => checkGradients((x) => mean(x, [1], true), [[3, 4, 2]]));
Deno.test("max", () => checkGradients((x) => max(x, [1]), [[3, 5]]));
Deno.test("max splits the gradient among ties", async () => {
  const g = new Graph();
  const x = g.input("x", "float32", [4]);
  const { grad } = await import("../../lib/graph/grad.ts");
  g.output("gx", grad(max(x), [x])[0]);
  const out = await (await CompiledGraph.create(g)).run({ x: Float32Array.of(1, 3, 3, 0) });
  assertClose(out.gx as Float32Array, [0, 0.5, 0.5, 0]);
});
Deno.test("l2 norm", () => checkGradients((x) => l2Norm(x, [1], true), [[3, 4]]));

Deno.test("topK and argMax select the largest entries", async () => {
  const g = new Graph();
  const x = g.input("x", "float32", [2, 4]);
  const [values, indices] = topK(x, 2);
  g.output("values", values);
  g.output("indices", indices);
  g.output("arg", argMax(x, 1));
  const out = await (await CompiledGraph.create(g)).run({
    x: Float32Array.of(1, 5, 3, 2, 9, 0, 9, 4),
  });
  assertClose(out.values as Float32Array, [5, 3, 9, 9]);
  assertClose(Array.from(out.indices as BigInt64Array, Number), [1, 2, 0, 2]);
  assertClose(Array.from(out.arg as BigInt64Array, Number), [1, 0]);
});
