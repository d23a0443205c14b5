/**
 * Elementwise math with NumPy broadcasting: arithmetic, exp/log/sqrt/pow, erf, tanh, sigmoid, abs,
 * min/max, where, clip, cast, comparisons, logic, and stop-gradient. Each differentiable op's VJP
 * rule is written beside its forward; gradients of broadcast operands are summed back to shape.
 *
 * Operands may be plain numbers: they become scalar constants of the other operand's dtype.
 *
 * @module
 */

import { broadcastShapes } from "./broadcast.ts";
import { requireFloat } from "./graph.ts";
import { sumToShape } from "./reduce.ts";
import { type DType, onnxElemType, type Tensor } from "./tensor.ts";

/** A tensor, or a number that becomes a scalar constant of the other operand's dtype. */
export type Operand = Tensor | number;

function lift(op: string, a: Operand, b: Operand): [Tensor, Tensor] {
  if (typeof a === "number" && typeof b === "number") {
    throw new Error(`${op}: at least one operand must be a tensor`);
  }
  const ta = typeof a === "number" ? (b as Tensor).graph.scalar(a, (b as Tensor).dtype) : a;
  const tb = typeof b === "number" ? ta.graph.scalar(b, ta.dtype) : b;
  if (ta.graph !== tb.graph) ta.graph.fail(op, `${ta} and ${tb} belong to different graphs`);
  if (ta.dtype !== tb.dtype) ta.graph.fail(op, `dtypes differ: ${ta} and ${tb}`);
  return [ta, tb];
}

/** Emits a broadcasting binary node; the output dtype defaults to the operands'. */
function emitBinary(
  op: string,
  onnxOp: string,
  a: Tensor,
  b: Tensor,
  dtype: DType = a.dtype,
): Tensor {
  return a.graph.emit1(onnxOp, [a, b], dtype, broadcastShapes(op, [a, b]));
}

/** Emits a unary node of the same dtype and shape as `x`. */
function emitUnary(onnxOp: string, x: Tensor): Tensor {
  return x.graph.emit1(onnxOp, [x], x.dtype, x.dims);
}

/** a + b. */
export function add(a: Operand, b: Operand): Tensor {
  const [x, y] = lift("add", a, b);
  const out = emitBinary("add", "Add", x, y);
  x.graph.record("add", [x, y], [out], ([g]) => [sumToShape(g!, x.shape), sumToShape(g!, y.shape)]);
  return out;
}

/** a − b. */
export function sub(a: Operand, b: Operand): Tensor {
  const [x, y] = lift("sub", a, b);
  const out = emitBinary("sub", "Sub", x, y);
  x.graph.record(
    "sub",
    [x, y],
    [out],
    ([g]) => [sumToShape(g!, x.shape), sumToShape(neg(g!), y.shape)],
  );
  return out;
}

/** a · b (elementwise). */
export function mul(a: Operand, b: Operand): Tensor {
  const [x, y] = lift("mul", a, b);
  const out = emitBinary("mul", "Mul", x, y);
  x.graph.record("mul", [x, y], [out], ([g]) => [
    sumToShape(mul(g!, y), x.shape),
    sumToShape(mul(g!, x), y.shape),
  ]);
  return out;
}

/** a / b. */
export function div(a: Operand, b: Operand): Tensor {
  const [x, y] = lift("div", a, b);
  const out = emitBinary("div", "Div", x, y);
  x.graph.record("div", [x, y], [out], ([g]) => {
    const gx = div(g!, y);
    return [sumToShape(gx, x.shape), sumToShape(neg(mul(gx, out)), y.shape)];
  });
  return out;
}

/** −x. */
export function neg(x: Tensor): Tensor {
  const y = emitUnary("Neg", x);
  x.graph.record("neg", [x], [y], ([g]) => [neg(g!)]);
  return y;
}

/** eˣ. */
export function exp(x: Tensor): Tensor {
  requireFloat("exp", x);
  const y = emitUnary("Exp", x);
  x.graph.record("exp", [x], [y], ([g]) => [mul(g!, y)]);
  return y;
}

/** Natural logarithm. */
export function log(x: Tensor): Tensor {
  requireFloat("log", x);
  const y = emitUnary("Log", x);
  x.graph.record("log", [x], [y], ([g]) => [div(g!, x)]);
  return y;
}

/** Square root. */
export function sqrt(x: Tensor): Tensor {
  requireFloat("sqrt", x);
  const y = emitUnary("Sqrt", x);
  x.graph.record("sqrt", [x], [y], ([g]) => [div(mul(g!, 0.5), y)]);
  return y;
}

/** xᵖ; `p` a number (constant exponent) or a tensor (then it gets the gradient log(x)·xᵖ too). */
export function pow(x: Tensor, p: Operand): Tensor {
  requireFloat("pow", x);
  const [base, exponent] = lift("pow", x, p);
  const y = emitBinary("pow", "Pow", base, exponent);
  base.graph.record("pow", [base, exponent], [y], ([g]) => {
    const dBase = typeof p === "number"
      ? mul(pow(base, p - 1), p)
      : mul(exponent, pow(base, sub(exponent, 1)));
    return [
      sumToShape(mul(g!, dBase), base.shape),
      typeof p === "number" ? undefined : sumToShape(mul(g!, mul(y, log(base))), exponent.shape),
    ];
  });
  return y;
}

/** Number of Maclaurin terms of the float64 erf substitute (enough for |x| ≤ 4). */
const ERF_SERIES_TERMS = 76;

/**
 * Emits erf(x) without recording it: the ONNX Erf node in float32; in float64 (where
 * onnxruntime's CPU provider has no Erf kernel) the Maclaurin series
 * 2/√π · Σ (−1)ⁿ x^(2n+1) / (n!(2n+1)) on x clipped to [−4, 4], summed term by term (accurate to
 * ~1e-11 for |x| ≤ 4, off by at most 1.6e-8 beyond). The float64 path exists so that gradient
 * checks in float64 exercise the erf and GELU rules.
 */
export function emitErf(x: Tensor): Tensor {
  if (x.dtype !== "float64") return emitUnary("Erf", x);
  const g = x.graph;
  const exponents: number[] = [];
  const coefficients: number[] = [];
  let factorial = 1;
  for (let n = 0; n < ERF_SERIES_TERMS; n++) {
    if (n > 1) factorial *= n;
    exponents.push(2 * n + 1);
    coefficients.push(((n % 2 ? -1 : 1) * 2) / Math.sqrt(Math.PI) / (factorial * (2 * n + 1)));
  }
  const terms = [...x.shape, ERF_SERIES_TERMS];
  const clipped = g.emit1(
    "Clip",
    [x, g.scalar(-4, x.dtype), g.scalar(4, x.dtype)],
    x.dtype,
    x.shape,
  );
  const column = g.emit1("Reshape", [clipped, g.int64s([...x.shape, 1])], x.dtype, [...x.shape, 1]);
  const powers = g.emit1(
    "Pow",
    [column, g.constant(exponents, x.dtype, [ERF_SERIES_TERMS])],
    x.dtype,
    terms,
  );
  const weighted = g.emit1(
    "Mul",
    [powers, g.constant(coefficients, x.dtype, [ERF_SERIES_TERMS])],
    x.dtype,
    terms,
  );
  return g.emit1("ReduceSum", [weighted, g.int64s([-1])], x.dtype, x.shape, { keepdims: { i: 0 } });
}

/** The Gauss error function. VJP: 2/√π · e^(−x²). */
export function erf(x: Tensor): Tensor {
  requireFloat("erf", x);
  const y = emitErf(x);
  x.graph.record(
    "erf",
    [x],
    [y],
    ([g]) => [mul(g!, mul(exp(neg(mul(x, x))), 2 / Math.sqrt(Math.PI)))],
  );
  return y;
}

/** Hyperbolic tangent. VJP: 1 − y². */
export function tanh(x: Tensor): Tensor {
  requireFloat("tanh", x);
  const y = emitUnary("Tanh", x);
  x.graph.record("tanh", [x], [y], ([g]) => [mul(g!, sub(1, mul(y, y)))]);
  return y;
}

/** Logistic sigmoid. VJP: y(1 − y). */
export function sigmoid(x: Tensor): Tensor {
  requireFloat("sigmoid", x);
  const y = emitUnary("Sigmoid", x);
  x.graph.record("sigmoid", [x], [y], ([g]) => [mul(g!, mul(y, sub(1, y)))]);
  return y;
}

/** |x|. VJP: sign(x) (0 at 0, as PyTorch). */
export function abs(x: Tensor): Tensor {
  const y = emitUnary("Abs", x);
  x.graph.record("abs", [x], [y], ([g]) => [mul(g!, emitUnary("Sign", x))]);
  return y;
}

/** Elementwise maximum. VJP: to the larger operand, split equally on ties (as PyTorch). */
export function maximum(a: Operand, b: Operand): Tensor {
  return extremum("maximum", "Max", greater, a, b);
}

/** Elementwise minimum. VJP: to the smaller operand, split equally on ties (as PyTorch). */
export function minimum(a: Operand, b: Operand): Tensor {
  return extremum("minimum", "Min", less, a, b);
}

function extremum(
  op: string,
  onnxOp: string,
  wins: (a: Tensor, b: Tensor) => Tensor,
  a: Operand,
  b: Operand,
): Tensor {
  const [x, y] = lift(op, a, b);
  const out = emitBinary(op, onnxOp, x, y);
  x.graph.record(op, [x, y], [out], ([g]) => {
    const share = add(cast(wins(x, y), x.dtype), mul(cast(equal(x, y), x.dtype), 0.5));
    return [sumToShape(mul(g!, share), x.shape), sumToShape(mul(g!, sub(1, share)), y.shape)];
  });
  return out;
}

/** `cond ? a : b` elementwise (broadcasting). VJP: the gradient goes to the chosen branch. */
export function where(cond: Tensor, a: Operand, b: Operand): Tensor {
  const [x, y] = lift("where", a, b);
  const g = x.graph;
  if (cond.dtype !== "bool") g.fail("where", `condition must be bool, got ${cond}`);
  const out = g.emit1("Where", [cond, x, y], x.dtype, broadcastShapes("where", [cond, x, y]));
  g.record("where", [x, y], [out], ([gy]) => {
    const zero = g.scalar(0, x.dtype);
    return [
      sumToShape(where(cond, gy!, zero), x.shape),
      sumToShape(where(cond, zero, gy!), y.shape),
    ];
  });
  return out;
}

/** Clamps x to [low, high] (either bound may be undefined). VJP: passes where low ≤ x ≤ high. */
export function clip(x: Tensor, low?: number, high?: number): Tensor {
  const g = x.graph;
  const lo = low === undefined ? null : g.scalar(low, x.dtype);
  const hi = high === undefined ? null : g.scalar(high, x.dtype);
  const y = g.emit1("Clip", [x, lo, hi], x.dtype, x.dims);
  g.record("clip", [x], [y], ([gy]) => {
    let inside: Tensor | undefined;
    if (lo) inside = greaterEqual(x, lo);
    if (hi) {
      const below = lessEqual(x, hi);
      inside = inside ? logicalAnd(inside, below) : below;
    }
    return [inside ? mul(gy!, cast(inside, x.dtype)) : gy];
  });
  return y;
}

/** Converts to `dtype`. VJP: cast back, for float-to-float casts only. */
export function cast(x: Tensor, dtype: DType): Tensor {
  if (x.dtype === dtype) return x;
  const y = x.graph.emit1("Cast", [x], dtype, x.dims, { to: { i: onnxElemType(dtype) } });
  if (y.isFloat) x.graph.record("cast", [x], [y], ([g]) => [cast(g!, x.dtype)]);
  return y;
}

/** Identity with no gradient: autodiff treats the result as a constant. */
export function stopGradient(x: Tensor): Tensor {
  return emitUnary("Identity", x);
}

function comparison(op: string, onnxOp: string) {
  return (a: Operand, b: Operand): Tensor => {
    const [x, y] = lift(op, a, b);
    return emitBinary(op, onnxOp, x, y, "bool");
  };
}

/** a == b (bool result, no gradient). */
export const equal: (a: Operand, b: Operand) => Tensor = comparison("equal", "Equal");
/** a < b (bool result, no gradient). */
export const less: (a: Operand, b: Operand) => Tensor = comparison("less", "Less");
/** a > b (bool result, no gradient). */
export const greater: (a: Operand, b: Operand) => Tensor = comparison("greater", "Greater");
/** a ≤ b (bool result, no gradient). */
export const lessEqual: (a: Operand, b: Operand) => Tensor = comparison("lessEqual", "LessOrEqual");
/** a ≥ b (bool result, no gradient). */
export const greaterEqual: (a: Operand, b: Operand) => Tensor = comparison(
  "greaterEqual",
  "GreaterOrEqual",
);

/** Logical and of two bool tensors. */
export function logicalAnd(a: Tensor, b: Tensor): Tensor {
  return emitBinary("logicalAnd", "And", a, b, "bool");
}

/** Logical or of two bool tensors. */
export function logicalOr(a: Tensor, b: Tensor): Tensor {
  return emitBinary("logicalOr", "Or", a, b, "bool");
}

/** Logical not of a bool tensor. */
export function logicalNot(a: Tensor): Tensor {
  return emitUnary("Not", a);
}
