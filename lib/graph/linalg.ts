/**
 * Matrix products: batched, broadcasting `matmul` with optional transposes and scale, and
 * `linear` (PyTorch's `nn.Linear`: y = x·Wᵀ + b with W of shape [out, in]).
 *
 * Emission keeps onnxruntime's fast paths: 2-D products become `Gemm` (transposes are flags, no
 * Transpose node), batched products with a transpose or scale become `FusedMatMul` (unless the
 * graph emits standard operators only). Batch and row axes may be symbolic.
 *
 * Under a graph's autocast policy (`GraphOptions.matmulPrecision` float16 or bfloat16), products
 * of float32 operands run in that precision between two casts (see {@link autocastDType}).
 *
 * @module
 */

import { type Dim, formatDim, sameDim } from "./dim.ts";
import { requireFloat } from "./graph.ts";
import { cast } from "./math.ts";
import { sum, sumToShape } from "./reduce.ts";
import { reshape } from "./shape.ts";
import { formatShape, type Tensor } from "./tensor.ts";

/**
 * The precision the graph's autocast policy runs a product of `operands` in: the policy's
 * float16 or bfloat16 when the graph has one and every operand is float32, else undefined (the
 * product runs in the operands' dtype, as recorded).
 */
export function autocastDType(operands: readonly Tensor[]): "float16" | "bfloat16" | undefined {
  const precision = operands[0].graph.options.matmulPrecision;
  if (precision === undefined || precision === "float32") return undefined;
  return operands.every((t) => t.dtype === "float32") ? precision : undefined;
}

/** Options of {@link matmul}: transpose the last two axes of an operand, scale the product. */
export interface MatmulOptions {
  /** Use the transpose of the last two axes of `a`. */
  readonly transA?: boolean;
  /** Use the transpose of the last two axes of `b`. */
  readonly transB?: boolean;
  /** Scalar factor applied to the product. */
  readonly alpha?: number;
  /**
   * Whether the graph's autocast policy applies (default true). False keeps the operands'
   * precision, for the products PyTorch's autocast leaves alone (bicubic interpolation).
   */
  readonly autocast?: boolean;
}

/**
 * alpha · op(a) · op(b), where op transposes the last two axes when asked. Both operands have
 * rank ≥ 2; leading (batch) axes broadcast. Shapes: [..., m, k] × [..., k, n] → [..., m, n].
 * Under autocast, float32 operands are cast to the low precision and the product cast back.
 */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  const { transA = false, transB = false, alpha = 1, autocast = true } = options;
  const low = autocast ? autocastDType([a, b]) : undefined;
  if (low) return cast(matmul(cast(a, low), cast(b, low), options), "float32");
  const g = a.graph;
  requireFloat("matmul", a);
  if (a.dtype !== b.dtype) g.fail("matmul", `dtypes differ: ${a} and ${b}`);
  if (a.rank < 2 || b.rank < 2) g.fail("matmul", `operands need rank ≥ 2, got ${a} and ${b}`);
  const [m, k] = lastTwo(a, transA);
  const [k2, n] = lastTwo(b, transB);
  if (!sameDim(k, k2)) {
    g.fail(
      "matmul",
      `inner dimensions differ: ${formatShape(a.dims)}${transA ? "ᵀ" : ""} × ${
        formatShape(b.dims)
      }${transB ? "ᵀ" : ""} (${formatDim(k)} ≠ ${formatDim(k2)})`,
    );
  }
  const batch = broadcastBatch(a, b);
  const shape = [...batch, m, n];
  const y = emitMatmul(a, b, transA, transB, alpha, shape);
  g.record("matmul", [a, b], [y], ([gy]) => {
    const gc = gy!;
    const ga = transA
      ? matmul(b, gc, { transA: transB, transB: true, alpha, autocast })
      : matmul(gc, b, { transB: !transB, alpha, autocast });
    const gb = transB
      ? matmul(gc, a, { transA: true, transB: transA, alpha, autocast })
      : matmul(a, gc, { transA: !transA, alpha, autocast });
    return [sumToShape(ga, a.shape), sumToShape(gb, b.shape)];
  });
  return y;
}

function lastTwo(t: Tensor, trans: boolean): [Dim, Dim] {
  const r = t.dims[t.rank - 2];
  const c = t.dims[t.rank - 1];
  return trans ? [c, r] : [r, c];
}

function broadcastBatch(a: Tensor, b: Tensor): Dim[] {
  const ba = a.dims.slice(0, -2);
  const bb = b.dims.slice(0, -2);
  const rank = Math.max(ba.length, bb.length);
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    const da = ba[i - (rank - ba.length)] ?? 1;
    const db = bb[i - (rank - bb.length)] ?? 1;
    if (!sameDim(da, db) && da !== 1 && db !== 1) {
      a.graph.fail("matmul", `batch axes of ${a} and ${b} cannot be broadcast`);
    }
    out.push(da === 1 ? db : da);
  }
  return out;
}

function emitMatmul(
  a: Tensor,
  b: Tensor,
  transA: boolean,
  transB: boolean,
  alpha: number,
  shape: Dim[],
): Tensor {
  const g = a.graph;
  if (a.rank === 2 && b.rank === 2) {
    return g.emit1("Gemm", [a, b], a.dtype, shape, {
      transA: { i: transA ? 1 : 0 },
      transB: { i: transB ? 1 : 0 },
      alpha: { f: alpha },
    });
  }
  if (!transA && !transB && alpha === 1) return g.emit1("MatMul", [a, b], a.dtype, shape);
  if (a.dtype !== "float64" && !g.options.standardOpsOnly) {
    return g.emit1("FusedMatMul", [a, b], a.dtype, shape, {
      transA: { i: transA ? 1 : 0 },
      transB: { i: transB ? 1 : 0 },
      alpha: { f: alpha },
    });
  }
  // onnxruntime's CPU provider has no float64 FusedMatMul: spell the transposes and the scale out.
  const swap = (t: Tensor) => {
    const perm = t.dims.map((_, i) => i);
    [perm[t.rank - 2], perm[t.rank - 1]] = [perm[t.rank - 1], perm[t.rank - 2]];
    return g.emit1("Transpose", [t], t.dtype, perm.map((p) => t.dims[p]), {
      perm: { ints: perm },
    });
  };
  const product = g.emit1("MatMul", [transA ? swap(a) : a, transB ? swap(b) : b], a.dtype, shape);
  return alpha === 1
    ? product
    : g.emit1("Mul", [product, g.scalar(alpha, a.dtype)], a.dtype, shape);
}

/**
 * PyTorch `nn.Linear`: x [..., in] · weightᵀ [in, out] + bias [out] → [..., out], with
 * weight [out, in]. Leading axes are flattened so that one `Gemm` does the work. Under autocast,
 * x, the weight and the bias are cast to the low precision (as PyTorch's `addmm` there) and the
 * result cast back to float32.
 */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor): Tensor {
  const low = autocastDType(bias ? [x, weight, bias] : [x, weight]);
  if (low) {
    return cast(linear(cast(x, low), cast(weight, low), bias && cast(bias, low)), "float32");
  }
  const g = x.graph;
  requireFloat("linear", x);
  const inFeatures = x.dims[x.rank - 1];
  if (weight.rank !== 2 || !sameDim(weight.shape[1], inFeatures)) {
    g.fail(
      "linear",
      `weight ${weight} does not fit input ${x} (expected [out, ${formatDim(inFeatures)}])`,
    );
  }
  const outFeatures = weight.shape[0];
  if (bias && (bias.rank !== 1 || bias.shape[0] !== outFeatures)) {
    g.fail("linear", `bias ${bias} does not fit weight ${weight} (expected [${outFeatures}])`);
  }
  const x2 = reshape(x, [-1, inFeatures]);
  const rows = x2.dims[0];
  const y2 = g.emit1(
    "Gemm",
    bias ? [x2, weight, bias] : [x2, weight],
    x.dtype,
    [rows, outFeatures],
    {
      transB: { i: 1 },
    },
  );
  const inputs = bias ? [x2, weight, bias] : [x2, weight];
  g.record("linear", inputs, [y2], ([gy]) => [
    matmul(gy!, weight),
    matmul(gy!, x2, { transA: true }),
    ...(bias ? [sum(gy!, [0])] : []),
  ]);
  return reshape(y2, [...x.dims.slice(0, -1), outFeatures]);
}
