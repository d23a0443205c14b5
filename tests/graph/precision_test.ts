import * as ort from "onnxruntime-node";
import { assert } from "../assert.ts";
import { runOnnx } from "./run_onnx.ts";
import { grad } from "../../lib/graph/grad.ts";
import { Graph, type NodeSpec } from "../../lib/graph/graph.ts";
import { linear, matmul } from "../../lib/graph/linalg.ts";
import { add, cast } from "../../lib/graph/math.ts";
import { conv2dPatch, resizeBicubic, softmax } from "../../lib/graph/nn.ts";
import { encodeOnnxModel } from "../../lib/graph/onnx.ts";
import { sum } from "../../lib/graph/reduce.ts";
import { dtypeBytes, onnxElemType } from "../../lib/graph/tensor.ts";

const LOW = ["float16", "bfloat16"] as const;

/** The dtypes of a node's inputs (omitted optional inputs left out). */
function inputDTypes(g: Graph, node: NodeSpec): string[] {
  return node.inputs.filter((name) => name !== "").map((name) => g.dtypeOf(name));
}

/** `op:dtype-of-first-input` for every node, in order. */
function signature(g: Graph): string[] {
  return g.nodes.map((n) => `${n.opType}:${inputDTypes(g, n)[0]}`);
}

Deno.test("float16 and bfloat16 are ONNX element types 10 and 16 of two bytes", () => {
  assert.equal(onnxElemType("float16"), 10);
  assert.equal(onnxElemType("bfloat16"), 16);
  assert.equal(dtypeBytes("float16"), 2);
  assert.equal(dtypeBytes("bfloat16"), 2);
});

Deno.test("float16 and bfloat16 constants round to nearest even and load in onnxruntime", async () => {
  const values = [1, 0.1, -2.5, 65504, 70000, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.4e38, NaN];
  const g = new Graph();
  const half = g.constant(values, "float16", [values.length]);
  const brain = g.constant(values, "bfloat16", [values.length]);
  assert.deepEqual(
    [...(g.constants[0].data as Uint16Array)],
    [0x3c00, 0x2e66, 0xc100, 0x7bff, 0x7c00, 0x3c04, 0x3c0c, 0x7c00, 0x7e00],
  );
  // bfloat16 keeps float32's exponent: 1 + 2⁻⁸ is a tie that rounds to even (down), 1 + 3·2⁻⁸
  // one that rounds up, and float32's largest values round to infinity.
  assert.deepEqual(
    [...(g.constants[1].data as Uint16Array)],
    [0x3f80, 0x3dcd, 0xc020, 0x4780, 0x4789, 0x3f80, 0x3f82, 0x7f80, 0x7fc0],
  );
  g.output("half", cast(half, "float32"));
  g.output("brain", cast(brain, "float32"));
  const out = await runOnnx(encodeOnnxModel(g).model, {});
  const expect = (name: string, expected: number[]) =>
    assert.deepEqual([...(out[name].data as Float32Array)], expected, name);
  expect("half", [
    1,
    0.0999755859375,
    -2.5,
    65504,
    Infinity,
    1.00390625,
    1.01171875,
    Infinity,
    NaN,
  ]);
  expect("brain", [1, 0.10009765625, -2.5, 65536, 70144, 1, 1.015625, Infinity, NaN]);
});

Deno.test("a bfloat16 value cannot be a graph output", () => {
  const g = new Graph();
  const x = cast(g.input("x", "float32", [2]), "bfloat16");
  assert.throws(
    () => g.output("y", x),
    /^Error: output: Cast_\d+\[2\]:bfloat16 cannot be an output: onnxruntime's JavaScript tensors have no bfloat16, so cast it to float32 first$/,
  );
});

for (const precision of LOW) {
  Deno.test(`autocast ${precision}: a matrix product runs between casts, its gradient too`, () => {
    const g = new Graph("product", { matmulPrecision: precision });
    const a = g.input("a", "float32", [3, 4]);
    const b = g.param("b", [4, 5], { kind: "zeros" });
    const y = matmul(a, b, { alpha: 0.5 });
    assert.equal(y.dtype, "float32");
    assert.deepEqual(signature(g), [
      "Cast:float32",
      "Cast:float32",
      `Gemm:${precision}`,
      `Cast:${precision}`,
    ]);
    const before = g.nodes.length;
    const [gb] = grad(sum(y), [b]);
    assert.equal(gb.dtype, "float32");
    // Σ's gradient, its cast to the low precision, the products of the rule there (a's too,
    // unused), and the cast of b's gradient back.
    const backward = signature(g).slice(before + 1);
    assert.deepEqual(backward.filter((s) => s.startsWith("Cast")), [
      "Cast:float32",
      `Cast:${precision}`,
    ]);
    assert.deepEqual(backward.filter((s) => s.startsWith("Gemm")), [
      `Gemm:${precision}`,
      `Gemm:${precision}`,
    ]);
  });

  Deno.test(`autocast ${precision}: linear casts input, weight and bias; softmax stays float32`, () => {
    const g = new Graph("linear", { matmulPrecision: precision });
    const x = g.input("x", "float32", [2, 3, 4]);
    const w = g.param("w", [5, 4], { kind: "zeros" });
    const b = g.param("b", [5], { kind: "zeros" });
    const y = softmax(linear(x, w, b));
    const forward = signature(g);
    assert.deepEqual(forward, [
      "Cast:float32",
      "Cast:float32",
      "Cast:float32",
      `Reshape:${precision}`,
      `Gemm:${precision}`,
      `Reshape:${precision}`,
      `Cast:${precision}`,
      "Softmax:float32",
    ]);
    const gemm = g.nodes.find((n) => n.opType === "Gemm")!;
    assert.deepEqual(inputDTypes(g, gemm), [precision, precision, precision]);
    const [gw, gb] = grad(sum(y), [w, b]);
    assert.equal(gw.dtype, "float32");
    assert.equal(gb.dtype, "float32");
    const backward = g.nodes.slice(forward.length);
    // The input's, the weight's and the bias's gradients (the bias's as a product with a row of
    // ones) are products in the low precision; softmax's rule and Σ run in float32.
    for (const node of backward) {
      const dtypes = inputDTypes(g, node);
      if (node.opType === "Gemm") assert.deepEqual(dtypes, [precision, precision], node.name);
      if (["Mul", "Sub", "ReduceSum", "Expand"].includes(node.opType)) {
        assert(dtypes.every((d) => d !== precision), `${node.name} runs in float32`);
      }
    }
    assert.equal(backward.filter((n) => n.opType === "Gemm").length, 3);
  });

  Deno.test(`autocast ${precision}: batched products of attention run as FusedMatMul`, () => {
    for (const standardOpsOnly of [false, true]) {
      const g = new Graph("attention", { matmulPrecision: precision, standardOpsOnly });
      const q = g.input("q", "float32", [2, 3, 4]);
      const k = g.input("k", "float32", [2, 5, 4]);
      const v = g.input("v", "float32", [2, 5, 4]);
      const attention = softmax(matmul(q, k, { transB: true, alpha: 0.5 }));
      g.output("out", matmul(attention, v));
      const products = g.nodes.filter((n) => ["MatMul", "FusedMatMul"].includes(n.opType));
      assert.deepEqual(
        products.map((n) => n.opType),
        standardOpsOnly ? ["MatMul", "MatMul"] : ["FusedMatMul", "MatMul"],
      );
      for (const node of products) {
        assert.deepEqual(inputDTypes(g, node), [precision, precision], node.name);
      }
      if (standardOpsOnly) {
        const scale = g.nodes.find((n) => n.opType === "Mul")!;
        assert.deepEqual(inputDTypes(g, scale), [precision, precision]);
        assert(g.constants.some((c) => c.dtype === precision && c.shape.length === 0));
      }
      assert.deepEqual(inputDTypes(g, g.nodes.find((n) => n.opType === "Softmax")!), ["float32"]);
    }
  });

  Deno.test(`autocast ${precision}: the patch projection is a product of patch rows`, () => {
    const g = new Graph("patches", { matmulPrecision: precision });
    const images = g.input("images", "float32", [2, 3, 8, 8]);
    const weight = g.param("w", [6, 3, 4, 4], { kind: "zeros" });
    const bias = g.param("b", [6], { kind: "zeros" });
    const y = conv2dPatch(images, weight, bias, 4);
    assert.deepEqual(y.shape, [2, 6, 2, 2]);
    assert.equal(y.dtype, "float32");
    assert(!g.nodes.some((n) => n.opType === "Conv"));
    const gemm = g.nodes.filter((n) => n.opType === "Gemm");
    assert.equal(gemm.length, 1);
    assert.deepEqual(inputDTypes(g, gemm[0]), [precision, precision, precision]);
    const [gw] = grad(sum(y), [weight]);
    assert.equal(gw.dtype, "float32");
    // The forward product, then the rows', the weight's and the bias's gradients.
    const products = g.nodes.filter((n) => n.opType === "Gemm");
    assert.equal(products.length, 4);
    for (const node of products.slice(1)) {
      assert.deepEqual(inputDTypes(g, node), [precision, precision], node.name);
    }
  });

  Deno.test(`autocast ${precision}: bicubic interpolation keeps its input's precision`, () => {
    const g = new Graph("resize", { matmulPrecision: precision });
    const x = g.param("x", [1, 2, 3, 3], { kind: "zeros" });
    const y = resizeBicubic(x, 2, 2);
    grad(sum(y), [x]);
    assert(!g.nodes.some((n) => n.opType === "Cast"));
    assert(g.nodes.every((n) => inputDTypes(g, n).every((d) => d !== precision)));
  });

  Deno.test(`autocast ${precision}: float64 products are left alone`, () => {
    const g = new Graph("double", { matmulPrecision: precision });
    const a = g.input("a", "float64", [2, 3]);
    matmul(a, a, { transB: true });
    assert.deepEqual(signature(g), ["Gemm:float64"]);
  });
}

Deno.test("float32 graphs carry no cast: the products run in float32 as recorded", () => {
  for (const options of [{}, { matmulPrecision: "float32" as const }]) {
    const g = new Graph("plain", options);
    const images = g.input("images", "float32", [2, 3, 8, 8]);
    const weight = g.param("w", [6, 3, 4, 4], { kind: "zeros" });
    const y = conv2dPatch(images, weight, g.param("b", [6], { kind: "zeros" }), 4);
    const x = g.input("x", "float32", [2, 5, 4]);
    const loss = sum(softmax(matmul(linear(x, g.param("l", [4, 4], { kind: "zeros" })), x, {
      transB: true,
    })));
    grad(add(sum(y), loss), [weight]);
    assert(!g.nodes.some((n) => n.opType === "Cast"));
    assert(g.nodes.some((n) => n.opType === "Conv"));
    assert(g.nodes.every((n) => inputDTypes(g, n).every((d) => d === "float32" || d === "int64")));
  }
});

Deno.test("a float16 model loads in onnxruntime, whose CPU provider may lack its kernels", async () => {
  const g = new Graph("fp16", { matmulPrecision: "float16" });
  const x = g.input("x", "float32", [2, 4]);
  g.output("y", linear(x, g.param("w", [3, 4], { kind: "ones" })));
  const model = encodeOnnxModel(g).model;
  try {
    const session = await ort.InferenceSession.create(model, { logSeverityLevel: 4 });
    await session.release();
  } catch (error) {
    // The model is valid ONNX; only the CPU provider's float16 Gemm kernel may be missing.
    assert.match(String(error), /Could not find an implementation for Gemm\(13\)/);
  }
});
