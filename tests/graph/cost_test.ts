import { assert } from "../assert.ts";
import { countMacs } from "../../lib/graph/cost.ts";
import { grad } from "../../lib/graph/grad.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { linear, matmul } from "../../lib/graph/linalg.ts";
import { add, mul } from "../../lib/graph/math.ts";
import { conv2dPatch } from "../../lib/graph/nn.ts";
import { sum } from "../../lib/graph/reduce.ts";
import { symbolicDim } from "../../lib/graph/dim.ts";

Deno.test("countMacs counts each product's outputs times its contracted length", () => {
  const g = new Graph();
  // Gemm [2, 3] · [3, 4]: 8 outputs × 3.
  matmul(g.input("a", "float32", [2, 3]), g.input("b", "float32", [3, 4]));
  // Gemm with transA, [3, 2]ᵀ · [3, 4]: 8 outputs × 3.
  matmul(g.input("c", "float32", [3, 2]), g.input("d", "float32", [3, 4]), { transA: true });
  // MatMul broadcasting [5, 2, 3] · [3, 4]: 40 outputs × 3.
  matmul(g.input("e", "float32", [5, 2, 3]), g.input("f", "float32", [3, 4]));
  // FusedMatMul with transA, [5, 3, 2]ᵀ · [5, 3, 4]: 40 outputs × 3.
  matmul(g.input("h", "float32", [5, 3, 2]), g.input("k", "float32", [5, 3, 4]), {
    transA: true,
  });
  assert.equal(countMacs(g), 24 + 24 + 120 + 120);
});

Deno.test("countMacs counts a convolution as output elements times the filter size", () => {
  const g = new Graph();
  const x = g.input("x", "float32", [2, 3, 8, 8]);
  const weight = g.input("weight", "float32", [6, 3, 4, 4]);
  const bias = g.input("bias", "float32", [6]);
  conv2dPatch(x, weight, bias, 4);
  // Output [2, 6, 2, 2] = 48 elements, each a filter of 3·4·4 = 48 products.
  assert.equal(countMacs(g), 48 * 48);
});

Deno.test("countMacs ignores elementwise ops and counts a linear layer's backward", () => {
  const g = new Graph();
  const x = g.param("x", [4, 3], { kind: "zeros" });
  const weight = g.param("weight", [5, 3], { kind: "zeros" });
  const bias = g.param("bias", [5], { kind: "zeros" });
  const y = add(mul(linear(x, weight, bias), 2), 1);
  assert.equal(countMacs(g), 4 * 5 * 3);
  grad(sum(y), [x, weight, bias]);
  // Backward: the input gradient (4·3 outputs × 5), the weight gradient (5·3 outputs × 4 rows)
  // and the bias gradient, a sum over the 4 rows done as a ones[1, 4] · [4, 5] product.
  assert.equal(countMacs(g), 4 * 5 * 3 + 12 * 5 + 15 * 4 + 5 * 4);
});

Deno.test("countMacs names the value when a shape is symbolic", () => {
  const g = new Graph();
  const a = g.input("a", "float32", [symbolicDim("batch"), 3]);
  matmul(a, g.input("b", "float32", [3, 4]));
  assert.throws(
    () => countMacs(g),
    /countMacs: a\[batch,3\] \(at node Gemm_0\) has symbolic dimensions/,
  );
});
