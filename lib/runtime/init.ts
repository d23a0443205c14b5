/**
 * Initial parameter values: draws the values an {@link InitRule} describes, with a seeded
 * {@link Rng}, as float32 in row-major order.
 *
 * @module
 */

import type { InitRule } from "../graph/graph.ts";
import { formatShape, type Shape, shapeSize } from "../graph/tensor.ts";
import type { Rng } from "./rng.ts";

/**
 * PyTorch's fan-in of a weight (`_calculate_fan_in_and_fan_out`): for shape
 * `[out, in, ...kernel]` it is `in · ∏kernel`. Throws for fewer than 2 axes, as PyTorch does.
 */
export function fanIn(shape: Shape): number {
  if (shape.length < 2) {
    throw new Error(`fanIn needs a shape with at least 2 axes, got ${formatShape(shape)}`);
  }
  return shapeSize(shape.slice(1));
}

/**
 * The initial values of a float32 tensor of `shape` under `rule`, drawn from `rng` in row-major
 * order. `truncNormal` draws N(mean, std²) conditioned on [a, b] (value units, like PyTorch's
 * `trunc_normal_`); `torchDefault` draws U(−1/√fanIn, 1/√fanIn). Results are rounded to float32.
 */
export function initialValues(rule: InitRule, shape: Shape, rng: Rng): Float32Array {
  const out = new Float32Array(shapeSize(shape));
  switch (rule.kind) {
    case "zeros":
      return out;
    case "ones":
      return out.fill(1);
    case "constant":
      return out.fill(rule.value);
    case "normal": {
      const mean = rule.mean ?? 0;
      checkStd(rule.kind, rule.std);
      for (let i = 0; i < out.length; i++) out[i] = rng.normal(mean, rule.std);
      return out;
    }
    case "truncNormal":
      return fillTruncNormal(out, rule.mean ?? 0, rule.std, rule.a, rule.b, rng);
    case "uniform":
      return fillUniform(out, rule.kind, rule.low, rule.high, rng);
    case "torchDefault": {
      if (!(rule.fanIn > 0) || !Number.isFinite(rule.fanIn)) {
        throw new Error(`torchDefault init needs a positive fanIn, got ${rule.fanIn}`);
      }
      const bound = 1 / Math.sqrt(rule.fanIn);
      return fillUniform(out, rule.kind, -bound, bound, rng);
    }
  }
}

function checkStd(kind: string, std: number): void {
  if (!(std >= 0) || !Number.isFinite(std)) {
    throw new Error(`${kind} init needs a finite std ≥ 0, got ${std}`);
  }
}

function fillUniform(
  out: Float32Array,
  kind: string,
  low: number,
  high: number,
  rng: Rng,
): Float32Array {
  if (!(low <= high) || !Number.isFinite(low) || !Number.isFinite(high)) {
    throw new Error(`${kind} init needs finite low ≤ high, got low=${low}, high=${high}`);
  }
  for (let i = 0; i < out.length; i++) out[i] = rng.uniformRange(low, high);
  return out;
}

function fillTruncNormal(
  out: Float32Array,
  mean: number,
  std: number,
  a: number,
  b: number,
  rng: Rng,
): Float32Array {
  checkStd("truncNormal", std);
  if (!(a <= b) || !Number.isFinite(mean)) {
    throw new Error(
      `truncNormal init needs a ≤ b and a finite mean, got a=${a}, b=${b}, mean=${mean}`,
    );
  }
  if (std === 0 || a === b) return out.fill(Math.min(Math.max(mean, a), b));
  const alpha = (a - mean) / std;
  const beta = (b - mean) / std;
  for (let i = 0; i < out.length; i++) {
    const x = mean + std * truncStandardNormal(alpha, beta, rng);
    out[i] = Math.min(Math.max(x, a), b);
  }
  return out;
}

/**
 * One exact draw of a standard normal conditioned on [alpha, beta] (alpha < beta), by rejection
 * from the proposal with the best acceptance rate (Robert 1995): the normal itself, a uniform on
 * the interval, or a shifted exponential for tails.
 */
function truncStandardNormal(alpha: number, beta: number, rng: Rng): number {
  if (beta <= 0 && alpha < 0) return -truncStandardNormal(-beta, -alpha, rng);
  if (alpha <= 0) {
    if (beta - alpha >= Math.sqrt(2 * Math.PI)) {
      for (;;) {
        const z = rng.normal();
        if (z >= alpha && z <= beta) return z;
      }
    }
    for (;;) {
      const z = rng.uniformRange(alpha, beta);
      if (rng.uniform() < Math.exp(-0.5 * z * z)) return z;
    }
  }
  const root = Math.sqrt(alpha * alpha + 4);
  const uniformWidth = (2 * Math.sqrt(Math.E) / (alpha + root)) *
    Math.exp((alpha * alpha - alpha * root) / 4);
  if (beta - alpha < uniformWidth) {
    for (;;) {
      const z = rng.uniformRange(alpha, beta);
      if (rng.uniform() < Math.exp(0.5 * (alpha * alpha - z * z))) return z;
    }
  }
  const rate = (alpha + root) / 2;
  for (;;) {
    const z = alpha - Math.log(1 - rng.uniform()) / rate;
    if (z <= beta && rng.uniform() < Math.exp(-0.5 * (z - rate) * (z - rate))) return z;
  }
}
