/**
 * Shape ops: reshape, transpose, slice, concat, split, gather, expand, pad, squeeze, unsqueeze,
 * roll, and zeros. Each differentiable op's VJP rule is written beside its forward.
 *
 * Reshape, transpose, slice, concat, split, gather, expand, squeeze and unsqueeze also take
 * tensors with symbolic axes; a reshape or expand target may hold symbolic sizes, which are then
 * computed in the graph at run time. Pad, roll and zeros need static shapes.
 *
 * @module
 */

import {
  addDims,
  type Dim,
  type Dims,
  divideDims,
  formatDim,
  isSymbolic,
  productOfDims,
  sameDim,
} from "./dim.ts";
import { formatShape, sameShape, type Shape, type Tensor } from "./tensor.ts";
import { sumToShape } from "./reduce.ts";

/** The end index ONNX `Slice` clamps to the axis size: "to the end" of a symbolic axis. */
const SLICE_TO_END = Number.MAX_SAFE_INTEGER;

/** Normalizes a possibly negative axis for a tensor of rank `rank`, or throws naming the op. */
export function normalizeAxis(op: string, x: Tensor, axis: number, rank = x.rank): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) {
    x.graph.fail(op, `axis ${axis} is out of range for ${x}`);
  }
  return a;
}

/**
 * Reshapes `x` to `shape` (one entry may be -1: inferred). Element order is row-major.
 * Symbolic sizes must multiply to the same element count as x's. VJP: reshape the gradient back.
 */
export function reshape(x: Tensor, shape: Dims): Tensor {
  const g = x.graph;
  const target = [...shape];
  const size = productOfDims(x.dims);
  const unknown = target.indexOf(-1);
  if (unknown >= 0) {
    const known = productOfDims(target.filter((_, i) => i !== unknown));
    const inferred = known === 0 ? undefined : divideDims(size, known);
    if (inferred === undefined) {
      return g.fail("reshape", `cannot reshape ${x} to ${formatShape(shape)}`);
    }
    target[unknown] = inferred;
  }
  if (!sameDim(productOfDims(target), size) || target.some((d) => !isSymbolic(d) && d < 0)) {
    g.fail(
      "reshape",
      `cannot reshape ${x} (${formatDim(size)} elements) to ${formatShape(shape)}`,
    );
  }
  if (sameShape(target, x.dims)) return x;
  const y = g.emit1("Reshape", [x, g.shapeTensor(target)], x.dtype, target);
  g.record("reshape", [x], [y], ([gy]) => [reshape(gy!, x.dims)]);
  return y;
}

/** Inserts size-1 axes at `axes` (positions in the output). VJP: reshape back. */
export function unsqueeze(x: Tensor, axes: readonly number[]): Tensor {
  const rank = x.rank + axes.length;
  const at = new Set(axes.map((a) => normalizeAxis("unsqueeze", x, a, rank)));
  const shape: Dim[] = [];
  let next = 0;
  for (let i = 0; i < rank; i++) shape.push(at.has(i) ? 1 : x.dims[next++]);
  return reshape(x, shape);
}

/** Removes the size-1 axes `axes` (all size-1 axes when omitted). VJP: reshape back. */
export function squeeze(x: Tensor, axes?: readonly number[]): Tensor {
  const drop = new Set(
    axes
      ? axes.map((a) => normalizeAxis("squeeze", x, a))
      : x.dims.flatMap((d, i) => d === 1 ? [i] : []),
  );
  for (const a of drop) {
    if (x.dims[a] !== 1) {
      x.graph.fail("squeeze", `axis ${a} of ${x} has size ${formatDim(x.dims[a])}, not 1`);
    }
  }
  return reshape(x, x.dims.filter((_, i) => !drop.has(i)));
}

/** Permutes axes: output axis i is input axis `perm[i]`. VJP: the inverse permutation. */
export function transpose(x: Tensor, perm: readonly number[]): Tensor {
  const g = x.graph;
  if (perm.length !== x.rank || [...perm].sort((a, b) => a - b).some((p, i) => p !== i)) {
    g.fail("transpose", `perm [${perm}] is not a permutation of the axes of ${x}`);
  }
  if (perm.every((p, i) => p === i)) return x;
  const y = g.emit1("Transpose", [x], x.dtype, perm.map((p) => x.dims[p]), {
    perm: { ints: perm },
  });
  const inverse = new Array<number>(perm.length);
  perm.forEach((p, i) => (inverse[p] = i));
  g.record("transpose", [x], [y], ([gy]) => [transpose(gy!, inverse)]);
  return y;
}

/**
 * Takes `[start, end)` along each of `axes` (step 1; negative indices count from the end).
 * On a symbolic axis, 0 ≤ start and end is either a number (the axis is taken to be at least
 * that long) or the axis size itself (to the end). VJP: zero-pad the gradient back to the input
 * shape.
 */
export function slice(
  x: Tensor,
  starts: readonly number[],
  ends: readonly Dim[],
  axes: readonly number[] = starts.map((_, i) => i),
): Tensor {
  const g = x.graph;
  if (starts.length !== axes.length || ends.length !== axes.length) {
    g.fail("slice", "starts, ends and axes must have the same length");
  }
  const shape = [...x.dims];
  const normAxes = axes.map((a) => normalizeAxis("slice", x, a));
  const ranges = normAxes.map((a, i) => {
    const range = sliceRange(x, a, starts[i], ends[i]);
    shape[a] = range.size;
    return range;
  });
  if (sameShape(shape, x.dims)) return x;
  const y = g.emit1(
    "Slice",
    [
      x,
      g.int64s(ranges.map((r) => r.start)),
      g.int64s(ranges.map((r) => r.end)),
      g.int64s(normAxes),
    ],
    x.dtype,
    shape,
  );
  g.record("slice", [x], [y], ([gy]) => {
    const before = new Array<number>(x.rank).fill(0);
    const after = new Array<number>(x.rank).fill(0);
    normAxes.forEach((a, i) => {
      before[a] = ranges[i].start;
      after[a] = x.shape[a] - ranges[i].end;
    });
    return [pad(gy!, [...before, ...after])];
  });
  return y;
}

/** The ONNX start and end of one sliced axis, and the size it leaves. */
function sliceRange(
  x: Tensor,
  axis: number,
  start: number,
  end: Dim,
): { start: number; end: number; size: Dim } {
  const dim = x.dims[axis];
  if (!isSymbolic(dim) && !isSymbolic(end)) {
    const s = Math.min(Math.max(start < 0 ? start + dim : start, 0), dim);
    const e = Math.min(Math.max(end < 0 ? end + dim : end, 0), dim);
    if (e <= s) x.graph.fail("slice", `empty range [${start}, ${end}) on axis ${axis} of ${x}`);
    return { start: s, end: e, size: e - s };
  }
  if (start >= 0 && sameDim(end, dim)) {
    return { start, end: SLICE_TO_END, size: addDims(dim, -start) };
  }
  if (start >= 0 && !isSymbolic(end) && end > start) return { start, end, size: end - start };
  return x.graph.fail(
    "slice",
    `[${start}, ${formatDim(end)}) on axis ${axis} of ${x} is not a range of a symbolic axis ` +
      `(0 ≤ start < end, with end a number or the axis size)`,
  );
}

/**
 * Constant padding: `pads` = [begin_0, ..., begin_{r-1}, end_0, ..., end_{r-1}] (non-negative).
 * VJP: slice the gradient.
 */
export function pad(x: Tensor, pads: readonly number[], value = 0): Tensor {
  const g = x.graph;
  if (pads.length !== 2 * x.rank || pads.some((p) => !Number.isInteger(p) || p < 0)) {
    g.fail("pad", `pads [${pads}] must hold 2×${x.rank} non-negative integers for ${x}`);
  }
  if (pads.every((p) => p === 0)) return x;
  const shape = x.shape.map((d, i) => d + pads[i] + pads[i + x.rank]);
  const y = g.emit1("Pad", [x, g.int64s(pads), g.scalar(value, x.dtype)], x.dtype, shape, {
    mode: { s: "constant" },
  });
  g.record("pad", [x], [y], ([gy]) => [
    slice(gy!, pads.slice(0, x.rank), x.shape.map((d, i) => pads[i] + d)),
  ]);
  return y;
}

/** Concatenates tensors along `axis`. VJP: split the gradient into the inputs' sizes. */
export function concat(xs: readonly Tensor[], axis: number): Tensor {
  if (xs.length === 0) throw new Error("concat: needs at least one tensor");
  const first = xs[0];
  const g = first.graph;
  if (xs.length === 1) return first;
  const a = normalizeAxis("concat", first, axis);
  for (const t of xs) {
    if (
      t.dtype !== first.dtype || t.rank !== first.rank ||
      t.dims.some((d, i) => i !== a && !sameDim(d, first.dims[i]))
    ) {
      g.fail("concat", `cannot concatenate ${xs.join(", ")} along axis ${a}`);
    }
  }
  const shape = [...first.dims];
  shape[a] = xs.reduce<Dim>((n, t) => addDims(n, t.dims[a]), 0);
  const y = g.emit1("Concat", xs, first.dtype, shape, { axis: { i: a } });
  g.record("concat", xs, [y], ([gy]) => split(gy!, xs.map((t) => t.shape[a]), a));
  return y;
}

/** Splits `x` along `axis` into pieces of the given sizes. VJP: concatenate the gradients. */
export function split(x: Tensor, sizes: readonly number[], axis: number): Tensor[] {
  const g = x.graph;
  const a = normalizeAxis("split", x, axis);
  if (!sameDim(sizes.reduce((n, s) => n + s, 0), x.dims[a]) || sizes.some((s) => s <= 0)) {
    g.fail("split", `sizes [${sizes}] do not add up to axis ${a} of ${x}`);
  }
  if (sizes.length === 1) return [x];
  const outs = g.emit(
    "Split",
    [x, g.int64s(sizes)],
    sizes.map((s) => ({ dtype: x.dtype, shape: x.dims.map((d, i) => (i === a ? s : d)) })),
    { axis: { i: a } },
  );
  g.record("split", [x], outs, (grads) => [
    concat(grads.map((gi, i) => gi ?? zeros(x, outs[i].shape)), a),
  ]);
  return outs;
}

/**
 * Selects entries of `x` along `axis` with int64 `indices` (output shape: x.shape[:axis] +
 * indices.shape + x.shape[axis+1:]). VJP: scatter-add the gradient into zeros.
 */
export function gather(x: Tensor, indices: Tensor, axis: number): Tensor {
  const g = x.graph;
  const a = normalizeAxis("gather", x, axis);
  if (indices.dtype !== "int64") g.fail("gather", `indices must be int64, got ${indices}`);
  const shape = [...x.dims.slice(0, a), ...indices.dims, ...x.dims.slice(a + 1)];
  const y = g.emit1("Gather", [x, indices], x.dtype, shape, { axis: { i: a } });
  g.record("gather", [x], [y], ([gy]) => [gatherGrad(x, indices, a, gy!)]);
  return y;
}

/** Scatter-adds `gy` (the gradient of gather(x, indices, axis)) into a zero tensor shaped like x. */
function gatherGrad(x: Tensor, indices: Tensor, axis: number, gy: Tensor): Tensor {
  const g = x.graph;
  const k = indices.rank;
  // Bring the indexed axes of gy to the front: [indices..., x before axis..., x after axis...].
  const permToFront = [
    ...Array.from({ length: k }, (_, i) => axis + i),
    ...Array.from({ length: axis }, (_, i) => i),
    ...Array.from({ length: x.rank - axis - 1 }, (_, i) => axis + k + i),
  ];
  const updates = transpose(gy, permToFront);
  const target = [x.shape[axis], ...x.shape.slice(0, axis), ...x.shape.slice(axis + 1)];
  const idx = reshape(indices, [...indices.shape, 1]);
  const scattered = g.emit1("ScatterND", [zeros(x, target), idx, updates], x.dtype, target, {
    reduction: { s: "add" },
  });
  const back = [
    ...Array.from({ length: axis }, (_, i) => i + 1),
    0,
    ...Array.from({ length: x.rank - axis - 1 }, (_, i) => axis + 1 + i),
  ];
  return transpose(scattered, back);
}

/**
 * Broadcasts `x` to `shape` (NumPy rules; symbolic target sizes are computed at run time).
 * VJP: sum the gradient back to x's shape.
 */
export function expand(x: Tensor, shape: Dims): Tensor {
  const g = x.graph;
  const offset = shape.length - x.rank;
  if (offset < 0 || x.dims.some((d, i) => d !== 1 && !sameDim(d, shape[offset + i]))) {
    g.fail("expand", `cannot expand ${x} to ${formatShape(shape)}`);
  }
  if (sameShape(shape, x.dims)) return x;
  const y = g.emit1("Expand", [x, g.shapeTensor(shape)], x.dtype, shape);
  g.record("expand", [x], [y], ([gy]) => [sumToShape(gy!, x.shape)]);
  return y;
}

/** Rolls `x` by `shift` positions along `axis` (like `torch.roll`). Differentiable via slice/concat. */
export function roll(x: Tensor, shift: number, axis: number): Tensor {
  const a = normalizeAxis("roll", x, axis);
  const n = x.shape[a];
  const s = ((shift % n) + n) % n;
  if (s === 0) return x;
  return concat([slice(x, [n - s], [n], [a]), slice(x, [0], [n - s], [a])], a);
}

/** A zero tensor with `like`'s dtype and the given shape (default: `like`'s shape). Not recorded. */
export function zeros(like: Tensor, shape: Shape = like.shape): Tensor {
  const g = like.graph;
  return g.emit1("Expand", [g.scalar(0, like.dtype), g.int64s(shape)], like.dtype, shape);
}
