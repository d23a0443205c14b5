/**
 * Neural-network ops: softmax, log-softmax, layer norm, exact GELU, patch convolution
 * (kernel = stride) and bicubic resizing. Each op's VJP rule is written beside its forward.
 *
 * Softmax, layer norm, GELU and the patch convolution also take tensors with symbolic axes;
 * {@link resizeBicubicByScales} resizes to sizes known at run time.
 *
 * @module
 */

import { type Dim, formatDim, quotientDim, sameDim } from "./dim.ts";
import { requireFloat } from "./graph.ts";
import { autocastDType, linear, matmul } from "./linalg.ts";
import { add, emitErf, erf, exp, mul, neg, sqrt, sub } from "./math.ts";
import { mean, sum, sumToShape } from "./reduce.ts";
import { normalizeAxis, reshape, transpose } from "./shape.ts";
import type { Tensor } from "./tensor.ts";

/** Softmax along `axis`. VJP: y·(g − Σ g·y). */
export function softmax(x: Tensor, axis = -1): Tensor {
  requireFloat("softmax", x);
  const a = normalizeAxis("softmax", x, axis);
  const y = x.graph.emit1("Softmax", [x], x.dtype, x.dims, { axis: { i: a } });
  x.graph.record("softmax", [x], [y], ([g]) => [mul(y, sub(g!, sum(mul(g!, y), [a], true)))]);
  return y;
}

/** Log-softmax along `axis`. VJP: g − softmax(x)·Σ g. */
export function logSoftmax(x: Tensor, axis = -1): Tensor {
  requireFloat("logSoftmax", x);
  const a = normalizeAxis("logSoftmax", x, axis);
  const y = x.graph.emit1("LogSoftmax", [x], x.dtype, x.dims, { axis: { i: a } });
  x.graph.record("logSoftmax", [x], [y], ([g]) => [sub(g!, mul(exp(y), sum(g!, [a], true)))]);
  return y;
}

/**
 * Layer normalization over the last axis (PyTorch `nn.LayerNorm`): (x − μ)/√(σ² + eps)·w + b,
 * with the biased variance. `weight` and `bias` have shape [x.shape[-1]].
 * The VJP recomputes μ and σ from x, so the forward node stays fusable.
 */
export function layerNorm(x: Tensor, weight: Tensor, bias: Tensor, eps: number): Tensor {
  requireFloat("layerNorm", x);
  const g = x.graph;
  const d = x.dims[x.rank - 1];
  for (const p of [weight, bias]) {
    if (p.rank !== 1 || !sameDim(p.dims[0], d)) {
      g.fail("layerNorm", `${p} must have shape [${formatDim(d)}] to fit ${x}`);
    }
  }
  const y = g.emit1("LayerNormalization", [x, weight, bias], x.dtype, x.dims, {
    axis: { i: -1 },
    epsilon: { f: eps },
  });
  g.record("layerNorm", [x, weight, bias], [y], ([gy]) => {
    const centred = sub(x, mean(x, [-1], true));
    const rstd = reciprocal(sqrt(add(mean(mul(centred, centred), [-1], true), eps)));
    const xhat = mul(centred, rstd);
    const gxhat = mul(gy!, weight);
    const gx = mul(
      rstd,
      sub(sub(gxhat, mean(gxhat, [-1], true)), mul(xhat, mean(mul(gxhat, xhat), [-1], true))),
    );
    return [gx, sumToShape(mul(gy!, xhat), weight.shape), sumToShape(gy!, bias.shape)];
  });
  return y;
}

/** 1/x, not recorded (used inside VJP rules only). */
function reciprocal(x: Tensor): Tensor {
  return x.graph.emit1("Reciprocal", [x], x.dtype, x.shape);
}

/**
 * Exact (erf) GELU, PyTorch's `nn.GELU()` default: x·Φ(x). Emitted as the ONNX `Gelu` node in
 * float32 and through the erf substitute in float64. VJP: Φ(x) + x·φ(x), recomputed from x.
 */
export function gelu(x: Tensor): Tensor {
  requireFloat("gelu", x);
  const g = x.graph;
  let y: Tensor;
  if (x.dtype === "float64") {
    const scaled = g.emit1("Mul", [x, g.scalar(Math.SQRT1_2, x.dtype)], x.dtype, x.shape);
    const onePlus = g.emit1("Add", [emitErf(scaled), g.scalar(1, x.dtype)], x.dtype, x.shape);
    const half = g.emit1("Mul", [x, g.scalar(0.5, x.dtype)], x.dtype, x.shape);
    y = g.emit1("Mul", [half, onePlus], x.dtype, x.shape);
  } else {
    y = g.emit1("Gelu", [x], x.dtype, x.dims, { approximate: { s: "none" } });
  }
  g.record("gelu", [x], [y], ([gy]) => {
    const cdf = mul(add(erf(mul(x, Math.SQRT1_2)), 1), 0.5);
    const pdf = mul(exp(mul(mul(x, x), -0.5)), 1 / Math.sqrt(2 * Math.PI));
    return [mul(gy!, add(cdf, mul(x, pdf)))];
  });
  return y;
}

/**
 * Patch embedding convolution, kernel = stride = `patch` (PyTorch `nn.Conv2d` layout):
 * x [B, C, H, W], weight [D, C, p, p], bias [D] → [B, D, H/p, W/p]. H and W must be multiples of p.
 * Emitted as `Conv` in float32; in float64 (no `Conv` kernel there) as a product of patch rows.
 * VJP: dW and dx through patch rows (dx only when asked).
 *
 * Under the graph's autocast policy (static sizes) it is the same product written as a
 * {@link linear} map of the patch rows, which runs in the low precision with its gradient.
 *
 * With symbolic sizes (float32 only, no gradient, no autocast) the input first goes through a
 * reshape to [B, C, H/p, p, W/p, p] and back, which fails at run time when H or W is not a
 * multiple of p, where the strided convolution would silently drop the remainder; onnxruntime's
 * error then names the node scope `height_and_width_must_be_multiples_of_<p>`.
 */
export function conv2dPatch(x: Tensor, weight: Tensor, bias: Tensor, patch: number): Tensor {
  requireFloat("conv2dPatch", x);
  const g = x.graph;
  if (x.rank !== 4) g.fail("conv2dPatch", `input must be [B, C, H, W], got ${x}`);
  const inChannels = x.dims[1];
  const dim = weight.shape[0];
  if (
    weight.rank !== 4 || !sameDim(weight.shape[1], inChannels) || weight.shape[2] !== patch ||
    weight.shape[3] !== patch
  ) {
    g.fail(
      "conv2dPatch",
      `weight ${weight} must be [D, ${formatDim(inChannels)}, ${patch}, ${patch}]`,
    );
  }
  if (bias.rank !== 1 || bias.shape[0] !== dim) {
    g.fail("conv2dPatch", `bias ${bias} must be [${dim}]`);
  }
  if (x.dims.slice(2).some((d) => typeof d === "number" && d % patch !== 0)) {
    g.fail("conv2dPatch", `input ${x} is not a multiple of the patch size ${patch}`);
  }
  if (x.isSymbolic) return conv2dPatchAnySize(x, weight, bias, patch);
  if (autocastDType([x, weight, bias])) return conv2dPatchAsLinear(x, weight, bias, patch);
  const [batch, channels, height, width] = x.shape;
  const [h, w] = [height / patch, width / patch];
  const rows = batch * h * w;
  const rowWidth = channels * patch * patch;
  const raw = (op: string, t: Tensor, shape: number[], perm?: number[]) =>
    perm
      ? g.emit1(op, [t], t.dtype, shape, { perm: { ints: perm } })
      : g.emit1(op, [t, g.int64s(shape)], t.dtype, shape);
  // x → patch rows [B·h·w, C·p·p], row-major over (h, w) and (C, p, p).
  const patchRows = () => {
    const split = raw("Reshape", x, [batch, channels, h, patch, w, patch]);
    const moved = raw("Transpose", split, [batch, h, w, channels, patch, patch], [
      0,
      2,
      4,
      1,
      3,
      5,
    ]);
    return raw("Reshape", moved, [rows, rowWidth]);
  };
  const flatWeight = () => raw("Reshape", weight, [dim, rowWidth]);
  let y: Tensor;
  if (x.dtype === "float32") {
    y = g.emit1("Conv", [x, weight, bias], x.dtype, [batch, dim, h, w], {
      kernel_shape: { ints: [patch, patch] },
      strides: { ints: [patch, patch] },
    });
  } else {
    const product = g.emit1("Gemm", [patchRows(), flatWeight(), bias], x.dtype, [rows, dim], {
      transB: { i: 1 },
    });
    y = raw("Transpose", raw("Reshape", product, [batch, h, w, dim]), [batch, dim, h, w], [
      0,
      3,
      1,
      2,
    ]);
  }
  g.record("conv2dPatch", [x, weight, bias], [y], ([gy]) => {
    const gyRows = reshape(transpose(gy!, [0, 2, 3, 1]), [rows, dim]);
    const gw = reshape(matmul(gyRows, patchRows(), { transA: true }), weight.shape);
    const gxRows = reshape(matmul(gyRows, flatWeight()), [batch, h, w, channels, patch, patch]);
    const gx = reshape(transpose(gxRows, [0, 3, 1, 4, 2, 5]), x.shape);
    return [gx, gw, sum(gy!, [0, 2, 3])];
  });
  return y;
}

/**
 * {@link conv2dPatch} as recorded shape ops around a {@link linear} map of the patch rows
 * [B·h·w, C·p·p] (row-major over (h, w) and (C, p, p)), for the autocast policy.
 */
function conv2dPatchAsLinear(x: Tensor, weight: Tensor, bias: Tensor, patch: number): Tensor {
  const [batch, channels, height, width] = x.shape;
  const [h, w] = [height / patch, width / patch];
  const dim = weight.shape[0];
  const split = reshape(x, [batch, channels, h, patch, w, patch]);
  const rows = reshape(transpose(split, [0, 2, 4, 1, 3, 5]), [batch * h * w, -1]);
  const product = linear(rows, reshape(weight, [dim, -1]), bias);
  return transpose(reshape(product, [batch, h, w, dim]), [0, 3, 1, 2]);
}

/** {@link conv2dPatch} on an input with symbolic sizes: checked by a reshape, then `Conv`. */
function conv2dPatchAnySize(x: Tensor, weight: Tensor, bias: Tensor, patch: number): Tensor {
  const g = x.graph;
  if (x.dtype !== "float32") {
    g.fail("conv2dPatch", `an input with symbolic sizes must be float32, got ${x}`);
  }
  const [batch, channels, height, width] = x.dims;
  const [h, w] = [quotientDim(height, patch), quotientDim(width, patch)];
  const checked = g.scope(`height_and_width_must_be_multiples_of_${patch}`, () => {
    const patches = [batch, channels, h, patch, w, patch];
    const split = g.emit1("Reshape", [x, g.shapeTensor(patches)], x.dtype, patches);
    return g.emit1("Reshape", [split, g.shapeTensor(x.dims)], x.dtype, x.dims);
  });
  return g.emit1("Conv", [checked, weight, bias], x.dtype, [batch, weight.shape[0], h, w], {
    kernel_shape: { ints: [patch, patch] },
    strides: { ints: [patch, patch] },
  });
}

/**
 * Bicubic resize of the last two axes by scale factors, exactly as PyTorch's
 * `F.interpolate(mode="bicubic", scale_factor=s, align_corners=False)`: output size ⌊n·s⌋, source
 * coordinate (d + 0.5)/s − 0.5, Keys kernel with A = −0.75, taps clamped to the border.
 * Computed as A_h · x · A_wᵀ with constant interpolation matrices, so it is differentiable; in
 * the input's precision under autocast too, as PyTorch's autocast leaves interpolation alone.
 */
export function resizeBicubic(x: Tensor, scaleH: number, scaleW: number): Tensor {
  requireFloat("resizeBicubic", x);
  const g = x.graph;
  if (x.rank < 2) g.fail("resizeBicubic", `input needs rank ≥ 2, got ${x}`);
  const [inH, inW] = x.shape.slice(-2);
  const rows = bicubicMatrix(inH, scaleH);
  const cols = bicubicMatrix(inW, scaleW);
  const ah = g.constant(rows.data, x.dtype, [rows.outSize, inH]);
  const aw = g.constant(cols.data, x.dtype, [cols.outSize, inW]);
  return matmul(matmul(ah, x, { autocast: false }), aw, { transB: true, autocast: false });
}

/**
 * {@link resizeBicubic} with scale factors computed at run time, for graphs with symbolic sizes:
 * x [N, C, H, W], `scales` float32 [2] = (scaleH, scaleW) → [N, C, outH, outW], where the caller
 * states outH = ⌊H·scaleH⌋ and outW = ⌊W·scaleW⌋. Emitted as ONNX `Resize` (cubic, A = −0.75,
 * half-pixel source coordinates from the given scales, taps clamped to the border), which
 * resamples as PyTorch's `F.interpolate(mode="bicubic", scale_factor=s)` does, and returns x
 * unchanged at scale 1. Not differentiable: autodiff through it fails with a message.
 */
export function resizeBicubicByScales(x: Tensor, scales: Tensor, outH: Dim, outW: Dim): Tensor {
  const g = x.graph;
  requireFloat("resizeBicubicByScales", x);
  if (x.rank !== 4) g.fail("resizeBicubicByScales", `input must be [N, C, H, W], got ${x}`);
  if (scales.dtype !== "float32" || scales.rank !== 1 || scales.dims[0] !== 2) {
    g.fail("resizeBicubicByScales", `scales must be float32 [2], got ${scales}`);
  }
  const allScales = g.emit1(
    "Concat",
    [g.constant([1, 1], "float32", [2]), scales],
    "float32",
    [4],
    { axis: { i: 0 } },
  );
  const y = g.emit1("Resize", [x, null, allScales], x.dtype, [...x.dims.slice(0, 2), outH, outW], {
    mode: { s: "cubic" },
    cubic_coeff_a: { f: -0.75 },
    coordinate_transformation_mode: { s: "half_pixel" },
  });
  g.record("resizeBicubicByScales", [x], [y], () =>
    g.fail(
      "resizeBicubicByScales",
      "has no gradient; resizeBicubic resizes by fixed scales differentiably",
    ));
  return y;
}

/** Row-major [⌊n·scale⌋, n] matrix of PyTorch's bicubic (A = −0.75) weights. */
export function bicubicMatrix(n: number, scale: number): { outSize: number; data: Float64Array } {
  const outSize = Math.floor(n * scale);
  const data = new Float64Array(outSize * n);
  const a = -0.75;
  const near = (t: number) => ((a + 2) * t - (a + 3)) * t * t + 1;
  const far = (t: number) => ((a * t - 5 * a) * t + 8 * a) * t - 4 * a;
  for (let d = 0; d < outSize; d++) {
    const source = (d + 0.5) / scale - 0.5;
    const base = Math.floor(source);
    const t = source - base;
    const weights = [far(t + 1), near(t), near(1 - t), far(2 - t)];
    weights.forEach((wt, j) => {
      const index = Math.min(Math.max(base - 1 + j, 0), n - 1);
      data[d * n + index] += wt;
    });
  }
  return { outSize, data };
}

/** −x·log(y) summed, a small helper for cross-entropies over the last axis: Σ −p·log q. */
export function crossEntropySoft(p: Tensor, logQ: Tensor): Tensor {
  return sum(neg(mul(p, logQ)), [-1]);
}
