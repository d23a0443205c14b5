/**
 * Element-wise indexing along one axis: `gatherElements` reads one entry per index, `scatterAdd`
 * adds one update per index. Each is the other's adjoint, so each VJP rule uses the other op.
 *
 * @module
 */

import { sameDim } from "./dim.ts";
import { normalizeAxis } from "./shape.ts";
import type { Tensor } from "./tensor.ts";

/** Checks int64 indices of the same rank as `x`, matching it on every axis but `axis`. */
function checkIndices(op: string, x: Tensor, indices: Tensor, axis: number): void {
  const g = x.graph;
  if (indices.dtype !== "int64") g.fail(op, `indices must be int64, got ${indices}`);
  if (
    indices.rank !== x.rank || indices.dims.some((d, i) => i !== axis && !sameDim(d, x.dims[i]))
  ) {
    g.fail(op, `indices ${indices} must match ${x} on every axis but ${axis}`);
  }
}

/**
 * y[..., j, ...] = x[..., indices[..., j, ...], ...] along `axis` (ONNX `GatherElements`,
 * `torch.gather`): the output has the shape of `indices`, which must equal x's on every other
 * axis. VJP: the gradient is scatter-added back into zeros of x's shape.
 */
export function gatherElements(x: Tensor, indices: Tensor, axis: number): Tensor {
  const g = x.graph;
  const a = normalizeAxis("gatherElements", x, axis);
  checkIndices("gatherElements", x, indices, a);
  const y = g.emit1("GatherElements", [x, indices], x.dtype, indices.dims, { axis: { i: a } });
  g.record("gatherElements", [x], [y], ([gy]) => {
    const zero = g.emit1("Expand", [g.scalar(0, x.dtype), g.int64s(x.shape)], x.dtype, x.shape);
    return [scatterAdd(zero, indices, gy!, a)];
  });
  return y;
}

/**
 * A copy of `data` with each entry of `updates` added at its index along `axis` (ONNX
 * `ScatterElements` with reduction `add`, `torch.scatter_add`): out[..., indices[..., j, ...],
 * ...] += updates[..., j, ...]. `updates` has the shape of `indices`; repeated indices accumulate,
 * in index order on the CPU. VJP: data gets the gradient, updates get it gathered at the indices.
 */
export function scatterAdd(data: Tensor, indices: Tensor, updates: Tensor, axis: number): Tensor {
  const g = data.graph;
  const a = normalizeAxis("scatterAdd", data, axis);
  checkIndices("scatterAdd", data, indices, a);
  if (updates.dtype !== data.dtype || updates.dims.some((d, i) => !sameDim(d, indices.dims[i]))) {
    g.fail("scatterAdd", `updates ${updates} must have the shape of ${indices}, dtype of ${data}`);
  }
  const y = g.emit1("ScatterElements", [data, indices, updates], data.dtype, data.dims, {
    axis: { i: a },
    reduction: { s: "add" },
  });
  g.record("scatterAdd", [data, updates], [y], ([gy]) => [gy!, gatherElements(gy!, indices, a)]);
  return y;
}
