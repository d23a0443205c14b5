/**
 * Reductions (sum, mean, max, L2 norm) with keepdims, the broadcast adjoint `sumToShape`, and the
 * non-differentiable selections top-k and argmax.
 *
 * @module
 */

import { reductionAxesFor } from "./broadcast.ts";
import { requireFloat } from "./graph.ts";
import { cast, div, equal, mul, where } from "./math.ts";
import type { Dim } from "./dim.ts";
import { expand, normalizeAxis, reshape } from "./shape.ts";
import type { Shape, Tensor } from "./tensor.ts";

/** Which reduction an op performs, and its ONNX op type. */
type ReduceKind = "sum" | "mean" | "max" | "l2";
const ONNX_REDUCE: Record<ReduceKind, string> = {
  sum: "ReduceSum",
  mean: "ReduceMean",
  max: "ReduceMax",
  l2: "ReduceL2",
};

function reduceAxes(op: string, x: Tensor, axes?: readonly number[]): number[] {
  const list = axes ?? x.dims.map((_, i) => i);
  return [...new Set(list.map((a) => normalizeAxis(op, x, a)))].sort((a, b) => a - b);
}

function keptShape(x: Tensor, axes: readonly number[]): Dim[] {
  return x.dims.map((d, i) => (axes.includes(i) ? 1 : d));
}

function emitReduce(
  kind: ReduceKind,
  x: Tensor,
  axes: readonly number[],
  keepdims: boolean,
): Tensor {
  const g = x.graph;
  const shape = keepdims ? keptShape(x, axes) : x.dims.filter((_, i) => !axes.includes(i));
  const leading = axes.length === x.rank - 1 && axes.every((a, i) => a === i);
  if (kind === "sum" && leading && x.rank >= 2 && !x.isSymbolic) {
    return sumLeadingAxes(x, shape as Shape);
  }
  return g.emit1(ONNX_REDUCE[kind], [x, g.int64s(axes)], x.dtype, shape, {
    keepdims: { i: keepdims ? 1 : 0 },
  });
}

/**
 * Σ over every axis but the last (the gradient of a bias), as ones[1, M] · x[M, n]: onnxruntime's
 * GEMM runs this on all cores, several times faster than its ReduceSum over leading axes.
 */
function sumLeadingAxes(x: Tensor, shape: readonly number[]): Tensor {
  const g = x.graph;
  const n = x.shape[x.rank - 1];
  const rows = x.size / n;
  const flat = g.emit1("Reshape", [x, g.int64s([rows, n])], x.dtype, [rows, n]);
  const ones = g.filled(1, x.dtype, [1, rows]);
  const summed = g.emit1("Gemm", [ones, flat], x.dtype, [1, n]);
  return g.emit1("Reshape", [summed, g.int64s(shape)], x.dtype, shape);
}

/** Brings a reduced gradient back to the input shape: reshape to keepdims form, then expand. */
function spread(gy: Tensor, x: Tensor, axes: readonly number[]): Tensor {
  return expand(reshape(gy, keptShape(x, axes)), x.shape);
}

/** Sum over `axes` (all axes when omitted). VJP: broadcast the gradient. */
export function sum(x: Tensor, axes?: readonly number[], keepdims = false): Tensor {
  requireFloat("sum", x);
  const ax = reduceAxes("sum", x, axes);
  const y = emitReduce("sum", x, ax, keepdims);
  x.graph.record("sum", [x], [y], ([gy]) => [spread(gy!, x, ax)]);
  return y;
}

/** Mean over `axes` (all axes when omitted). VJP: broadcast the gradient divided by the count. */
export function mean(x: Tensor, axes?: readonly number[], keepdims = false): Tensor {
  requireFloat("mean", x);
  const ax = reduceAxes("mean", x, axes);
  const y = emitReduce("mean", x, ax, keepdims);
  x.graph.record("mean", [x], [y], ([gy]) => {
    const count = ax.reduce((n, a) => n * x.shape[a], 1);
    return [spread(mul(gy!, 1 / count), x, ax)];
  });
  return y;
}

/**
 * Maximum over `axes`. VJP: the gradient goes to the maximal entries, split equally among ties
 * (PyTorch's `amax` convention).
 */
export function max(x: Tensor, axes?: readonly number[], keepdims = false): Tensor {
  requireFloat("max", x);
  const ax = reduceAxes("max", x, axes);
  const y = emitReduce("max", x, ax, keepdims);
  x.graph.record("max", [x], [y], ([gy]) => {
    const hit = cast(equal(x, reshape(y, keptShape(x, ax))), x.dtype);
    const ties = emitReduce("sum", hit, ax, true);
    return [mul(hit, spread(div(reshape(gy!, keptShape(x, ax)), ties), x, ax))];
  });
  return y;
}

/** Euclidean norm over `axes`. VJP: g·x/‖x‖, and 0 where the norm is 0 (as PyTorch). */
export function l2Norm(x: Tensor, axes?: readonly number[], keepdims = false): Tensor {
  requireFloat("l2Norm", x);
  const g = x.graph;
  const ax = reduceAxes("l2Norm", x, axes);
  const y = emitReduce("l2", x, ax, keepdims);
  g.record("l2Norm", [x], [y], ([gy]) => {
    const norm = reshape(y, keptShape(x, ax));
    const safe = where(equal(norm, g.scalar(0, x.dtype)), g.scalar(1, x.dtype), norm);
    return [mul(spread(reshape(gy!, keptShape(x, ax)), x, ax), div(x, safe))];
  });
  return y;
}

/** Sums a broadcast gradient back to `shape` (the adjoint of NumPy broadcasting). */
export function sumToShape(gy: Tensor, shape: Shape): Tensor {
  const axes = reductionAxesFor(gy.shape, shape);
  if (!axes) return gy;
  return reshape(sum(gy, axes, true), shape);
}

/** The `k` largest entries along `axis` and their int64 indices, sorted descending. No gradient. */
export function topK(x: Tensor, k: number, axis = -1): [values: Tensor, indices: Tensor] {
  const g = x.graph;
  const a = normalizeAxis("topK", x, axis);
  if (!Number.isInteger(k) || k < 1 || k > x.shape[a]) {
    g.fail("topK", `k = ${k} must be in 1..${x.shape[a]} for axis ${a} of ${x}`);
  }
  const shape = x.shape.map((d, i) => (i === a ? k : d));
  const [values, indices] = g.emit(
    "TopK",
    [x, g.int64s([k])],
    [{ dtype: x.dtype, shape }, { dtype: "int64", shape }],
    { axis: { i: a }, largest: { i: 1 }, sorted: { i: 1 } },
  );
  return [values, indices];
}

/** Index (int64) of the largest entry along `axis` (first one on ties). No gradient. */
export function argMax(x: Tensor, axis = -1, keepdims = false): Tensor {
  const a = normalizeAxis("argMax", x, axis);
  const shape = keepdims ? keptShape(x, [a]) : x.dims.filter((_, i) => i !== a);
  return x.graph.emit1("ArgMax", [x], "int64", shape, {
    axis: { i: a },
    keepdims: { i: keepdims ? 1 : 0 },
    select_last_index: { i: 0 },
  });
}
