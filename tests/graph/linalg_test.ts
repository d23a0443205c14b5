import { assert } from "../assert.ts";
import { checkGradients } from "./gradcheck.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { linear, matmul } from "../../lib/graph/linalg.ts";

for (const transA of [false, true]) {
  for (const transB of [false, true]) {
    Deno.test(`2-D matmul transA=${transA} transB=${transB} alpha=0.5`, () =>
      checkGradients(
        (a, b) => matmul(a, b, { transA, transB, alpha: 0.5 }),
        [transA ? [4, 3] : [3, 4], transB ? [5, 4] : [4, 5]],
      ));
    Deno.test(`batched matmul transA=${transA} transB=${transB}`, () =>
      checkGradients(
        (a, b) => matmul(a, b, { transA, transB, alpha: 0.25 }),
        [transA ? [2, 3, 4, 3] : [2, 3, 3, 4], transB ? [3, 5, 4] : [3, 4, 5]],
      ));
  }
}
Deno.test("matmul broadcasts a 2-D operand over a batch", () =>
  checkGradients((a, b) => matmul(a, b), [[2, 3, 4], [4, 2]]));
Deno.test("linear with bias on a 3-D input", () =>
  checkGradients(linear, [[2, 3, 4], [5, 4], [5]]));
Deno.test("linear without bias", () => checkGradients((x, w) => linear(x, w), [[3, 4], [2, 4]]));

Deno.test("matmul rejects mismatched inner dimensions with a readable message", () => {
  const g = new Graph();
  const a = g.input("a", "float32", [2, 3]);
  const b = g.input("b", "float32", [4, 5]);
  assert.throws(
    () => g.scope("head", () => matmul(a, b)),
    /matmul: inner dimensions differ: \[2,3\] × \[4,5\] \(3 ≠ 4\) \(in scope head\)/,
  );
});

Deno.test("a graph of standard operators only spells a scaled, transposed product out", () => {
  for (const standardOpsOnly of [false, true]) {
    const g = new Graph("attention", { standardOpsOnly });
    const q = g.input("q", "float32", [2, 3, 4]);
    const k = g.input("k", "float32", [2, 5, 4]);
    const y = matmul(q, k, { transB: true, alpha: 0.5 });
    assert.deepEqual(y.dims, [2, 3, 5]);
    assert.deepEqual(
      g.nodes.map((n) => n.opType),
      standardOpsOnly ? ["Transpose", "MatMul", "Mul"] : ["FusedMatMul"],
    );
  }
  const g = new Graph("standard", { standardOpsOnly: true });
  const x = g.input("x", "float32", [2, 2]);
  assert.throws(
    () => g.emit1("FusedMatMul", [x, x], "float32", [2, 2]),
    /FusedMatMul: com\.microsoft\.FusedMatMul is not a standard operator, and this graph emits only those/,
  );
});
