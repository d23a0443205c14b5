/**
 * Shape ops: reshape, transpose, slice, concat, split, gather, expand, pad, squeeze, unsqueeze,
 * roll, and zeros. Each differentiable op's VJP rule is written beside its forward.
 *
 * @module
 */

import { formatShape, sameShape, type Shape, shapeSize, type Tensor } from "./tensor.ts";
import { sumToShape } from "./reduce.ts";

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
 * VJP: reshape the gradient back.
 */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const g = x.graph;
  const target = [...shape];
  const unknown = target.indexOf(-1);
  if (unknown >= 0) {
    const known = shapeSize(target.filter((_, i) => i !== unknown));
    if (known === 0 || x.size % known !== 0) {
      g.fail("reshape", `cannot reshape ${x} to ${formatShape(shape)}`);
    }
    target[unknown] = x.size / known;
  }
  if (shapeSize(target) !== x.size || target.some((d) => d < 0)) {
    g.fail("reshape", `cannot reshape ${x} (${x.size} elements) to ${formatShape(shape)}`);
  }
  if (sameShape(target, x.shape)) return x;
  const y = g.emit1("Reshape", [x, g.int64s(target)], x.dtype, target);
  g.record("reshape", [x], [y], ([gy]) => [reshape(gy!, x.shape)]);
  return y;
}

/** Inserts size-1 axes at `axes` (positions in the output). VJP: reshape back. */
export function unsqueeze(x: Tensor, axes: readonly number[]): Tensor {
  const rank = x.rank + axes.length;
  const at = new Set(axes.map((a) => normalizeAxis("unsqueeze", x, a, rank)));
  const shape: number[] = [];
  let next = 0;
  for (let i = 0; i < rank; i++) shape.push(at.has(i) ? 1 : x.shape[next++]);
  return reshape(x, shape);
}

/** Removes the size-1 axes `axes` (all size-1 axes when omitted). VJP: reshape back. */
export function squeeze(x: Tensor, axes?: readonly number[]): Tensor {
  const drop = new Set(
    axes
      ? axes.map((a) => normalizeAxis("squeeze", x, a))
      : x.shape.flatMap((d, i) => d === 1 ? [i] : []),
  );
  for (const a of drop) {
    if (x.shape[a] !== 1) {
      x.graph.fail("squeeze", `axis ${a} of ${x} has size ${x.shape[a]}, not 1`);
    }
  }
  return reshape(x, x.shape.filter((_, i) => !drop.has(i)));
}

/** Permutes axes: output axis i is input axis `perm[i]`. VJP: the inverse permutation. */
export function transpose(x: Tensor, perm: readonly number[]): Tensor {
  const g = x.graph;
  if (perm.length !== x.rank || [...perm].sort((a, b) => a - b).some((p, i) => p !== i)) {
    g.fail("transpose", `perm [${perm}] is not a permutation of the axes of ${x}`);
  }
  if (perm.every((p, i) => p === i)) return x;
  const y = g.emit1("Transpose", [x], x.dtype, perm.map((p) => x.shape[p]), {
    perm: { ints: perm },
  });
  const inverse = new Array<number>(perm.length);
  perm.forEach((p, i) => (inverse[p] = i));
  g.record("transpose", [x], [y], ([gy]) => [transpose(gy!, inverse)]);
  return y;
}

/**
 * Takes `[start, end)` along each of `axes` (step 1; negative indices count from the end).
 * VJP: zero-pad the gradient back to the input shape.
 */
export function slice(
  x: Tensor,
  starts: readonly number[],
  ends: readonly number[],
  axes: readonly number[] = starts.map((_, i) => i),
): Tensor {
  const g = x.graph;
  if (starts.length !== axes.length || ends.length !== axes.length) {
    g.fail("slice", "starts, ends and axes must have the same length");
  }
  const shape = [...x.shape];
  const before = new Array<number>(x.rank).fill(0);
  const after = new Array<number>(x.rank).fill(0);
  const normAxes = axes.map((a) => normalizeAxis("slice", x, a));
  normAxes.forEach((a, i) => {
    const dim = x.shape[a];
    const s = Math.min(Math.max(starts[i] < 0 ? starts[i] + dim : starts[i], 0), dim);
    const e = Math.min(Math.max(ends[i] < 0 ? ends[i] + dim : ends[i], 0), dim);
    if (e <= s) g.fail("slice", `empty range [${starts[i]}, ${ends[i]}) on axis ${a} of ${x}`);
    shape[a] = e - s;
    before[a] = s;
    after[a] = dim - e;
  });
  if (sameShape(shape, x.shape)) return x;
  const y = g.emit1(
    "Slice",
    [
      x,
      g.int64s(normAxes.map((a) => before[a])),
      g.int64s(normAxes.map((a) => x.shape[a] - after[a])),
      g.int64s(normAxes),
    ],
    x.dtype,
    shape,
  );
  g.record("slice", [x], [y], ([gy]) => [pad(gy!, [...before, ...after])]);
  return y;
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
      t.shape.some((d, i) => i !== a && d !== first.shape[i])
    ) {
      g.fail("concat", `cannot concatenate ${xs.join(", ")} along axis ${a}`);
    }
  }
  const shape = [...first.shape];
  shape[a] = xs.reduce((n, t) => n + t.shape[a], 0);
  const y = g.emit1("Concat", xs, first.dtype, shape, { axis: { i: a } });
  g.record("concat", xs, [y], ([gy]) => split(gy!, xs.map((t) => t.shape[a]), a));
  return y;
}

/** Splits `x` along `axis` into pieces of the given sizes. VJP: concatenate the gradients. */
export function split(x: Tensor, sizes: readonly number[], axis: number): Tensor[] {
  const g = x.graph;
  const a = normalizeAxis("split", x, axis);
  if (sizes.reduce((n, s) => n + s, 0) !== x.shape[a] || sizes.some((s) => s <= 0)) {
    g.fail("split", `sizes [${sizes}] do not add up to axis ${a} of ${x}`);
  }
  if (sizes.length === 1) return [x];
  const outs = g.emit(
    "Split",
    [x, g.int64s(sizes)],
    sizes.map((s) => ({ dtype: x.dtype, shape: x.shape.map((d, i) => (i === a ? s : d)) })),
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
  const shape = [...x.shape.slice(0, a), ...indices.shape, ...x.shape.slice(a + 1)];
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

/** Broadcasts `x` to `shape` (NumPy rules). VJP: sum the gradient back to x's shape. */
export function expand(x: Tensor, shape: readonly number[]): Tensor {
  const g = x.graph;
  const offset = shape.length - x.rank;
  if (offset < 0 || x.shape.some((d, i) => d !== 1 && d !== shape[offset + i])) {
    g.fail("expand", `cannot expand ${x} to ${formatShape(shape)}`);
  }
  if (sameShape(shape, x.shape)) return x;
  const y = g.emit1("Expand", [x, g.int64s(shape)], x.dtype, shape);
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
