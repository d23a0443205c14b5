/**
 * NumPy-style broadcasting for elementwise ops, and its adjoint: summing a gradient back to an
 * operand's shape.
 *
 * @module
 */

import { type Dim, sameDim } from "./dim.ts";
import { formatShape, sameShape, type Shape, type Tensor } from "./tensor.ts";

/**
 * The broadcast shape of several operands (NumPy rules), or a build error naming the op. A
 * symbolic axis broadcasts against 1 and against the same size only.
 */
export function broadcastShapes(op: string, operands: readonly Tensor[]): Dim[] {
  const rank = Math.max(...operands.map((t) => t.rank));
  const out: Dim[] = new Array(rank).fill(1);
  for (const t of operands) {
    const offset = rank - t.rank;
    t.dims.forEach((d, i) => {
      const o = out[offset + i];
      if (o === 1) out[offset + i] = d;
      else if (d !== 1 && !sameDim(d, o)) {
        t.graph.fail(
          op,
          `shapes ${operands.map((x) => formatShape(x.dims)).join(" and ")} cannot be broadcast`,
        );
      }
    });
  }
  return out;
}

/**
 * The axes of `from` (a broadcast result) that must be summed to recover `to`, and whether a
 * reshape is needed afterwards. Returns undefined when the shapes are already equal.
 */
export function reductionAxesFor(from: Shape, to: Shape): number[] | undefined {
  if (sameShape(from, to)) return undefined;
  const offset = from.length - to.length;
  const axes: number[] = [];
  for (let i = 0; i < from.length; i++) {
    if (i < offset || (to[i - offset] === 1 && from[i] !== 1)) axes.push(i);
  }
  return axes;
}
