/**
 * Softmax that leaves entries out exactly. Attention masks add a large negative offset to the
 * logits of pairs that must not attend (−100 in the Swin Transformer's shifted windows); a plain
 * softmax then gives those pairs weights near the smallest float32, or subnormal ones, which are
 * no use to the result but make every product that reads them many times slower on the CPU.
 * Setting those weights to exactly 0 keeps the result to float32 precision and the arithmetic on
 * normal numbers.
 *
 * @module
 */

import { broadcastShapes } from "./broadcast.ts";
import { requireFloat } from "./graph.ts";
import { mul, sub } from "./math.ts";
import { sum } from "./reduce.ts";
import { sameShape, type Tensor } from "./tensor.ts";

/**
 * Softmax of `x` along its last axis with the entries where `keep` (bool, broadcast to x's
 * shape) is false set to exactly 0. Meant for logits whose left-out entries already carry a
 * large negative offset, so that their softmax weight is below float32 resolution. VJP:
 * y·(g − Σ g·y), the softmax's rule on the zeroed output, which gives the left-out entries no
 * gradient (exact up to those weights).
 */
export function maskedSoftmax(x: Tensor, keep: Tensor): Tensor {
  requireFloat("maskedSoftmax", x);
  const g = x.graph;
  if (keep.dtype !== "bool") g.fail("maskedSoftmax", `keep ${keep} must be bool`);
  if (!sameShape(broadcastShapes("maskedSoftmax", [x, keep]), x.dims)) {
    g.fail("maskedSoftmax", `keep ${keep} must broadcast to the shape of ${x}`);
  }
  const axis = x.rank - 1;
  const weights = g.emit1("Softmax", [x], x.dtype, x.dims, { axis: { i: axis } });
  const y = g.emit1("Where", [keep, weights, g.scalar(0, x.dtype)], x.dtype, x.dims);
  g.record("maskedSoftmax", [x], [y], ([gy]) => [mul(y, sub(gy!, sum(mul(gy!, y), [axis], true)))]);
  return y;
}
