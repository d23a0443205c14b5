/**
 * A constant re-arrangement of one axis: each output entry copies one input entry or a fill
 * value, and each input entry is copied at most once. The window partition of the Swin
 * Transformer (padding, cyclic shift and windows in one) and its reverse are such maps. Because
 * no input entry is used twice, the derivative is the same kind of map with the inverse index:
 * a Gather, never a scatter.
 *
 * @module
 */

import { staticDim } from "./graph.ts";
import { sum, sumToShape } from "./reduce.ts";
import { concat, expand, normalizeAxis, reshape } from "./shape.ts";
import { type Dims, isSymbolic } from "./dim.ts";
import type { Tensor } from "./tensor.ts";

/**
 * The entries of `x` along `axis` picked by the constant `index`: output entry i is input entry
 * index[i] where that is ≥ 0, else row −1 − index[i] of `fill` (−1: the first row; zeros when
 * `fill` is omitted, which allows −1 only). The output has index.length entries on `axis`; other
 * axes (symbolic ones included) are kept. `fill` has x's rank, F rows on `axis`, and broadcasts
 * over the other axes; each of its rows fills the same number of entries. Each input entry may be
 * picked at most once. VJP: x's gradient is this map with the inverse index (zeros for entries
 * never picked); each fill row's is the sum of the gradient over the entries it filled.
 */
export function permuteAxis(
  x: Tensor,
  index: readonly number[],
  axis: number,
  fill?: Tensor,
): Tensor {
  return permuteAxisParts(x, [index], axis, fill)[0];
}

/**
 * {@link permuteAxis} with the index cut into parts, one output per part: the same as permuting
 * with the parts concatenated and splitting the result along `axis`, without the copy a split
 * makes (e.g. the query, key and value windows of an attention gathered from one projection).
 * Each input entry may be picked at most once across all parts. VJP: the parts' gradients are
 * concatenated and mapped back as in {@link permuteAxis}.
 */
export function permuteAxisParts(
  x: Tensor,
  parts: readonly (readonly number[])[],
  axis: number,
  fill?: Tensor,
): Tensor[] {
  const g = x.graph;
  const a = normalizeAxis("permuteAxis", x, axis);
  const size = staticDim("permuteAxis", x, a);
  if (fill && (fill.rank !== x.rank || isSymbolic(fill.dims[a]))) {
    g.fail("permuteAxis", `fill ${fill} must have the rank of ${x} and fixed rows on axis ${a}`);
  }
  if (parts.length === 0 || parts.some((part) => part.length === 0)) {
    g.fail("permuteAxis", `every part of the index into ${x} must pick at least one entry`);
  }
  const index = parts.flat();
  const rows = fill ? staticDim("permuteAxis", fill, a) : 1;
  const seen = new Uint8Array(size);
  // The filled entries, by fill row.
  const filled: number[][] = Array.from({ length: rows }, () => []);
  index.forEach((i, position) => {
    if (!Number.isInteger(i) || i < -rows || i >= size) {
      g.fail("permuteAxis", `index entry ${i} is outside [${-rows}, ${size}) for ${x}`);
    }
    if (i >= 0 && seen[i]++) g.fail("permuteAxis", `index picks entry ${i} of ${x} twice`);
    if (i < 0) filled[-1 - i].push(position);
  });
  const uses = filled[0].length;
  if (fill && filled.some((positions) => positions.length !== uses)) {
    g.fail("permuteAxis", `the ${rows} rows of fill ${fill} must fill as many entries each`);
  }
  if (
    parts.length === 1 && uses === 0 && index.length === size &&
    index.every((i, position) => i === position)
  ) {
    return [x];
  }
  const withAxis = (d: number) => [...x.dims.slice(0, a), d, ...x.dims.slice(a + 1)];
  let source = x;
  if (uses > 0) {
    const fillRows = fill ? expand(fill, withAxis(rows)) : zerosLike(x, withAxis(1));
    source = g.emit1("Concat", [x, fillRows], x.dtype, withAxis(size + rows), {
      axis: { i: a },
    });
  }
  const ys = parts.map((part) =>
    g.emit1(
      "Gather",
      [source, g.int64s(part.map((i) => i < 0 ? size - 1 - i : i))],
      x.dtype,
      withAxis(part.length),
      { axis: { i: a } },
    )
  );
  const inputs = fill ? [x, fill] : [x];
  g.record("permuteAxis", inputs, ys, (grads) => {
    const gy = grads.length === 1
      ? grads[0]!
      : concat(grads.map((gi, p) => gi ?? zerosLike(ys[p], ys[p].dims)), a);
    const inverse = new Array<number>(size).fill(-1);
    index.forEach((i, position) => {
      if (i >= 0) inverse[i] = position;
    });
    const gx = permuteAxis(gy, inverse, a);
    if (!fill) return [gx];
    if (uses === 0) return [gx, undefined];
    const gyShape = gy.shape;
    const byRow = g.emit1(
      "Gather",
      [gy, g.int64s(filled.flat())],
      gy.dtype,
      [...gyShape.slice(0, a), rows * uses, ...gyShape.slice(a + 1)],
      { axis: { i: a } },
    );
    const split = reshape(byRow, [...gyShape.slice(0, a), rows, uses, ...gyShape.slice(a + 1)]);
    return [gx, sumToShape(sum(split, [a + 1]), fill.shape)];
  });
  return ys;
}

/** Zeros of `like`'s dtype with the given (possibly symbolic) dims; not recorded. */
function zerosLike(like: Tensor, dims: Dims): Tensor {
  const g = like.graph;
  return g.emit1("Expand", [g.scalar(0, like.dtype), g.shapeTensor(dims)], like.dtype, dims);
}
