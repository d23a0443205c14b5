import { assert, assertClose } from "../assert.ts";
import { checkGradients } from "./gradcheck.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { grad } from "../../lib/graph/grad.ts";
import { add, cast, mul } from "../../lib/graph/math.ts";
import { matmul } from "../../lib/graph/linalg.ts";
import { sum } from "../../lib/graph/reduce.ts";
import { gather } from "../../lib/graph/shape.ts";
import { encodeOnnxModel } from "../../lib/graph/onnx.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";
import { fromBinary } from "@bufbuild/protobuf";
import { ModelProtoSchema } from "onnx-buf";

Deno.test("fan-out: a value used three times accumulates three gradients", () =>
  checkGradients((x, y) => mul(add(mul(x, x), y), x), [[3], [3]]));

async function runGrads(g: Graph, feeds: Record<string, Float32Array>) {
  return await (await CompiledGraph.create(g)).run(feeds);
}

Deno.test("integer paths carry no gradient; float paths through them do", async () => {
  const g = new Graph();
  const x = g.input("x", "float32", [4]);
  const idx = cast(g.constant([3, 3, 0], "float32", [3]), "int64");
  const loss = sum(mul(gather(x, idx, 0), g.constant([1, 2, 3], "float32", [3])));
  g.output("gx", grad(loss, [x])[0]);
  const out = await runGrads(g, { x: Float32Array.of(1, 2, 3, 4) });
  assertClose(out.gx as Float32Array, [3, 0, 0, 3]);
});

Deno.test("a tensor the loss does not depend on gets zeros", async () => {
  const g = new Graph();
  const x = g.input("x", "float32", [2]);
  const unused = g.input("u", "float32", [3]);
  const [gx, gu] = grad(sum(mul(x, x)), [x, unused]);
  g.output("gx", gx);
  g.output("gu", gu);
  const out = await runGrads(g, { x: Float32Array.of(1, 2), u: Float32Array.of(5, 6, 7) });
  assertClose(out.gx as Float32Array, [2, 4]);
  assertClose(out.gu as Float32Array, [0, 0, 0]);
});

Deno.test("only the gradients asked for are emitted into the model", () => {
  const g = new Graph();
  const a = g.input("a", "float32", [3, 4]);
  const b = g.param("b", [4, 5], { kind: "zeros" });
  const loss = sum(matmul(a, b));
  g.output("loss", loss);
  g.output("gb", grad(loss, [b])[0]);
  const model = fromBinary(ModelProtoSchema, encodeOnnxModel(g).model);
  const gemms = model.graph!.node.filter((n) => n.opType === "Gemm");
  // The forward product and dL/db = aᵀ·g: no node computes dL/da.
  assert.equal(gemms.length, 2);
});

Deno.test("grad refuses a non-scalar loss without a seed", () => {
  const g = new Graph();
  const x = g.input("x", "float32", [3]);
  assert.throws(() => grad(mul(x, 2), [x]), /grad: loss .* is not a scalar; pass a seed gradient/);
});

Deno.test("an unknown ONNX op fails at build time with a readable message", () => {
  const g = new Graph();
  const x = g.input("x", "float32", [3]);
  assert.throws(
    () => g.scope("head", () => g.emit1("Frobnicate", [x], "float32", [3])),
    /Frobnicate: unknown op 'Frobnicate': it is not in the set of ONNX ops this graph emits \(in scope head\)/,
  );
});

Deno.test("a seed gradient propagates for a non-scalar output", async () => {
  const g = new Graph();
  const x = g.input("x", "float32", [3]);
  const seed = g.constant([1, 10, 100], "float32", [3]);
  g.output("gx", grad(mul(x, x), [x], seed)[0]);
  const out = await runGrads(g, { x: Float32Array.of(1, 2, 3) });
  assertClose(out.gx as Float32Array, [2, 40, 600]);
});
