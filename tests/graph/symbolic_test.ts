import * as ort from "onnxruntime-node";
import { assert, assertClose } from "../assert.ts";
import { addDims, mulDims, symbolicDim } from "../../lib/graph/dim.ts";
import { grad } from "../../lib/graph/grad.ts";
import { Graph, staticDim } from "../../lib/graph/graph.ts";
import { matmul } from "../../lib/graph/linalg.ts";
import { add, mul } from "../../lib/graph/math.ts";
import { conv2dPatch, resizeBicubic, resizeBicubicByScales } from "../../lib/graph/nn.ts";
import { encodeOnnxModel } from "../../lib/graph/onnx.ts";
import { sum } from "../../lib/graph/reduce.ts";
import { concat, expand, reshape, slice } from "../../lib/graph/shape.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { type Float32Feeds, runOnnx } from "./run_onnx.ts";

/** Runs `graph` once with onnxruntime on float32 feeds of the given shapes. */
function runAt(graph: Graph, feeds: Float32Feeds): Promise<Record<string, ort.Tensor>> {
  return runOnnx(encodeOnnxModel(graph).model, feeds);
}

function iota(n: number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => i * scale);
}

const [batch, n] = ["batch", "n"].map(symbolicDim);

Deno.test("symbolic reshape, expand, concat and slice give the right values at two run-time sizes", async () => {
  const g = new Graph("symbolic");
  const x = g.input("x", "float32", [batch, n, 2]);
  const cls = g.input("cls", "float32", [1, 1, 2]);
  const rows = reshape(x, [mulDims(batch, n), 2]);
  const tokens = concat([expand(cls, [batch, 1, 2]), reshape(rows, [batch, -1, 2])], 1);
  assert.equal(String(tokens.dims[1]), "n+1");
  // Slicing 1 + n tokens from 1 to the end leaves n: the same size as x's, so they add.
  const patches = slice(tokens, [1], [tokens.dims[1]], [1]);
  g.output("rows", mul(rows, 10));
  g.output("tokens", tokens);
  g.output("twice", add(patches, x));
  // One Shape node per symbol, however many targets use it.
  assert.equal(g.nodes.filter((node) => node.opType === "Shape").length, 2);

  for (const [b, m] of [[2, 3], [5, 1]]) {
    const data = iota(b * m * 2, 0.5);
    const out = await runAt(g, {
      x: { data, dims: [b, m, 2] },
      cls: { data: Float32Array.of(-1, -2), dims: [1, 1, 2] },
    });
    assert.deepEqual(out.rows.dims, [b * m, 2]);
    assertClose(out.rows.data as Float32Array, data.map((v) => 10 * v));
    assert.deepEqual(out.tokens.dims, [b, m + 1, 2]);
    const expected: number[] = [];
    for (let i = 0; i < b; i++) expected.push(-1, -2, ...data.subarray(i * m * 2, (i + 1) * m * 2));
    assertClose(out.tokens.data as Float32Array, expected);
    assert.deepEqual(out.twice.dims, [b, m, 2]);
    assertClose(out.twice.data as Float32Array, data.map((v) => 2 * v));
  }
});

Deno.test("shape errors with symbolic axes name the sizes", () => {
  const g = new Graph();
  const x = g.input("x", "float32", [batch, n, 2]);
  assert.throws(
    () => g.scope("blocks.0", () => reshape(x, [batch, 3])),
    /reshape: cannot reshape x\[batch,n,2\]:float32 \(2\*batch\*n elements\) to \[batch,3\] \(in scope blocks\.0\)/,
  );
  assert.throws(
    () => reshape(x, [n, -1, 3]),
    /reshape: cannot reshape x\[batch,n,2\]:float32 to \[n,-1,3\]/,
  );
  assert.throws(
    () => add(x, g.input("y", "float32", [3, 2])),
    /add: shapes \[batch,n,2\] and \[3,2\] cannot be broadcast/,
  );
  assert.throws(
    () => concat([x, g.input("z", "float32", [n, n, 2])], 1),
    /concat: cannot concatenate x\[batch,n,2\]:float32, z\[n,n,2\]:float32 along axis 1/,
  );
  assert.throws(
    () => matmul(x, g.input("w", "float32", [n, 4])),
    /matmul: inner dimensions differ: \[batch,n,2\] × \[n,4\] \(2 ≠ n\)/,
  );
  assert.throws(
    () => expand(x, [batch, addDims(n, 1), 2]),
    /expand: cannot expand x\[batch,n,2\]:float32 to \[batch,n\+1,2\]/,
  );
  assert.throws(
    () => slice(x, [-1], [n], [1]),
    /slice: \[-1, n\) on axis 1 of x\[batch,n,2\]:float32 is not a range of a symbolic axis/,
  );
  assert.throws(
    () => x.shape,
    /x\[batch,n,2\]:float32 has symbolic dimensions; fixed sizes are needed here/,
  );
  assert.throws(
    () => staticDim("linear", x, 1),
    /linear: axis 1 of x\[batch,n,2\]:float32 must have a fixed size, not n/,
  );
  assert.throws(
    () => g.input("rows", "float32", [mulDims(batch, n)]),
    /input: axis 0 of rows must be a number or a plain symbol, not batch\*n/,
  );
  assert.throws(
    () => reshape(x, [symbolicDim("m"), mulDims(batch, 2), n]),
    /reshape: cannot reshape/,
  );
  assert.throws(
    () => g.shapeTensor([symbolicDim("m"), 2]),
    /dimValue: the size m is not an axis of a graph input/,
  );
});

Deno.test("autodiff refuses a graph with symbolic axes, and a compiled graph needs fixed sizes", async () => {
  const g = new Graph();
  const x = g.input("x", "float32", [batch, 2]);
  const w = g.input("w", "float32", [2, 2]);
  const loss = sum(matmul(x, w));
  assert.throws(
    () => grad(loss, [w]),
    /grad: autodiff needs static shapes, but the graph has symbolic axes \(input x\[batch,2\]\)/,
  );
  g.output("loss", loss);
  const session = await CompiledGraph.create(g);
  try {
    await assert.rejects(
      session.run({ x: new Float32Array(6), w: new Float32Array(4) }),
      /x\[batch,2\] has symbolic dimensions; fixed sizes are needed here/,
    );
  } finally {
    await session.release();
  }
});

Deno.test("patch convolution at any size equals the static one and refuses sizes that are not multiples", async () => {
  const [height, width] = ["height", "width"].map(symbolicDim);
  const g = new Graph("conv");
  const x = g.input("x", "float32", [batch, 3, height, width]);
  const weight = g.input("weight", "float32", [4, 3, 2, 2]);
  const bias = g.input("bias", "float32", [4]);
  const y = conv2dPatch(x, weight, bias, 2);
  assert.equal(String(y.dims), "batch,4,height/2,width/2");
  g.output("y", y);
  const rng = new Rng(3);
  const random = (count: number) => Float32Array.from({ length: count }, () => rng.normal());
  const weights = { weight: random(48), bias: random(4) };
  for (const [b, h, w] of [[1, 4, 6], [3, 8, 2]]) {
    const images = random(b * 3 * h * w);
    const out = await runAt(g, {
      x: { data: images, dims: [b, 3, h, w] },
      weight: { data: weights.weight, dims: [4, 3, 2, 2] },
      bias: { data: weights.bias, dims: [4] },
    });
    const fixed = new Graph("fixed");
    fixed.output(
      "y",
      conv2dPatch(
        fixed.input("x", "float32", [b, 3, h, w]),
        fixed.input("weight", "float32", [4, 3, 2, 2]),
        fixed.input("bias", "float32", [4]),
        2,
      ),
    );
    const expected = await (await CompiledGraph.create(fixed)).run({ x: images, ...weights });
    assert.deepEqual(out.y.dims, [b, 4, h / 2, w / 2]);
    assertClose(out.y.data as Float32Array, expected.y as Float32Array);
  }
  for (const [h, w] of [[5, 4], [4, 7]]) {
    await assert.rejects(
      runAt(g, {
        x: { data: new Float32Array(3 * h * w), dims: [1, 3, h, w] },
        weight: { data: weights.weight, dims: [4, 3, 2, 2] },
        bias: { data: weights.bias, dims: [4] },
      }),
      /height_and_width_must_be_multiples_of_2/,
      `${h}×${w}`,
    );
  }
});

Deno.test("bicubic resize by run-time scales equals the static resize, and is the identity at scale 1", async () => {
  const [outH, outW] = ["out_h", "out_w"].map(symbolicDim);
  const g = new Graph("resize");
  const x = g.input("x", "float32", [1, 2, 4, 4]);
  const scales = g.input("scales", "float32", [2]);
  // The output sizes are read from an input of that size.
  const size = g.input("size", "float32", [outH, outW]);
  const y = resizeBicubicByScales(x, scales, outH, outW);
  g.output("y", y);
  g.output("size_check", mul(size, 0));
  const table = iota(32, 0.25).map((v) => Math.sin(3 * v));
  for (const [sh, sw] of [[6.1 / 4, 3.1 / 4], [1, 1], [0.6, 2.3]]) {
    const [h, w] = [Math.floor(4 * sh), Math.floor(4 * sw)];
    const out = await runAt(g, {
      x: { data: table, dims: [1, 2, 4, 4] },
      scales: { data: Float32Array.of(sh, sw), dims: [2] },
      size: { data: new Float32Array(h * w), dims: [h, w] },
    });
    const fixed = new Graph("fixed");
    fixed.output("y", resizeBicubic(fixed.input("x", "float32", [1, 2, 4, 4]), sh, sw));
    const expected = await (await CompiledGraph.create(fixed)).run({ x: table });
    assert.deepEqual(out.y.dims, [1, 2, h, w]);
    assertClose(out.y.data as Float32Array, expected.y as Float32Array, 1e-5, 1e-6, `${sh}×${sw}`);
    if (sh === 1 && sw === 1) assertClose(out.y.data as Float32Array, table, 0, 1e-6);
  }
});

Deno.test("resizing by run-time scales has no gradient, and says so", () => {
  const g = new Graph();
  const x = g.input("x", "float32", [1, 1, 2, 2]);
  const y = resizeBicubicByScales(x, g.input("scales", "float32", [2]), 4, 4);
  assert.throws(
    () => grad(sum(y), [x]),
    /resizeBicubicByScales: has no gradient; resizeBicubic resizes by fixed scales differentiably \(in scope grad\)/,
  );
});
