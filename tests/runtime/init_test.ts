import assert from "node:assert/strict";
import type { InitRule } from "../../lib/graph/graph.ts";
import { fanIn, initialValues } from "../../lib/runtime/init.ts";
import { Rng } from "../../lib/runtime/rng.ts";

const N = 100_000;

function stats(values: Float32Array): { mean: number; std: number; min: number; max: number } {
  let sum = 0;
  let sumSq = 0;
  let min = Infinity;
  let max = -Infinity;
  for (const v of values) {
    sum += v;
    sumSq += v * v;
    min = Math.min(min, v);
    max = Math.max(max, v);
  }
  const mean = sum / values.length;
  return { mean, std: Math.sqrt(sumSq / values.length - mean * mean), min, max };
}

function near(actual: number, expected: number, tolerance: number, what: string): void {
  assert(
    Math.abs(actual - expected) <= tolerance,
    `${what}: ${actual} is not within ${tolerance} of ${expected}`,
  );
}

function draw(rule: InitRule, seed = 0, shape = [N]): Float32Array {
  return initialValues(rule, shape, new Rng(seed));
}

Deno.test("fanIn follows PyTorch: in · ∏kernel for [out, in, ...kernel]", () => {
  assert.equal(fanIn([192, 3, 16, 16]), 768);
  assert.equal(fanIn([384, 192]), 192);
  assert.equal(fanIn([8, 4, 3]), 12);
  assert.throws(() => fanIn([10]), /fanIn needs a shape with at least 2 axes, got \[10\]/);
});

Deno.test("zeros, ones and constant fill the whole shape", () => {
  const shape = [2, 3, 4];
  assert.deepEqual(initialValues({ kind: "zeros" }, shape, new Rng(0)), new Float32Array(24));
  assert.deepEqual(
    initialValues({ kind: "ones" }, shape, new Rng(0)),
    new Float32Array(24).fill(1),
  );
  assert.deepEqual(
    initialValues({ kind: "constant", value: 0.25 }, shape, new Rng(0)),
    new Float32Array(24).fill(0.25),
  );
  assert.equal(initialValues({ kind: "ones" }, [], new Rng(0)).length, 1);
});

Deno.test("normal has the requested mean and std", () => {
  const standard = stats(draw({ kind: "normal", std: 0.02 }));
  near(standard.mean, 0, 0.0003, "mean");
  near(standard.std, 0.02, 0.0004, "std");
  const shifted = stats(draw({ kind: "normal", std: 2, mean: -1 }, 1));
  near(shifted.mean, -1, 0.03, "shifted mean");
  near(shifted.std, 2, 0.04, "shifted std");
});

Deno.test("uniform stays in [low, high) with the right moments", () => {
  const { mean, std, min, max } = stats(draw({ kind: "uniform", low: -0.5, high: 1.5 }));
  assert(min >= -0.5 && max < 1.5, `range [${min}, ${max}]`);
  assert(min < -0.49 && max > 1.49, "draws reach both ends");
  near(mean, 0.5, 0.01, "mean");
  near(std, 2 / Math.sqrt(12), 0.01, "std");
});

Deno.test("torchDefault is U(±1/√fanIn) with fanIn 768 for a [192,3,16,16] patch embedding", () => {
  const shape = [192, 3, 16, 16];
  const bound = 1 / Math.sqrt(fanIn(shape));
  const values = initialValues({ kind: "torchDefault", fanIn: fanIn(shape) }, shape, new Rng(2));
  assert.equal(values.length, 147_456);
  const { mean, std, min, max } = stats(values);
  assert(min >= -Math.fround(bound) && max <= Math.fround(bound), `range [${min}, ${max}]`);
  assert(min < -0.99 * bound && max > 0.99 * bound, "draws reach both ends");
  near(mean, 0, 0.0005, "mean");
  near(std, bound / Math.sqrt(3), 0.0003, "std");
});

// Expected moments are the analytic truncated-normal ones, mean + std·(φ(α) − φ(β))/Z and
// std·√(1 + (αφ(α) − βφ(β))/Z − ((φ(α) − φ(β))/Z)²) with Z = Φ(β) − Φ(α); they agree with
// 2M-sample moments of torch.nn.init.trunc_normal_.
const TRUNC_CASES = [
  { name: "wide, around 0", mean: 0, std: 1, a: -1, b: 2, expMean: 0.229637, expStd: 0.720946 },
  { name: "narrow, around 0", mean: 0, std: 1, a: -0.5, b: 1, expMean: 0.206631, expStd: 0.41566 },
  { name: "upper tail", mean: 0, std: 1, a: 3, b: 4, expMean: 3.260454, expStd: 0.221986 },
  { name: "thin far tail", mean: 0, std: 1, a: 5, b: 5.1, expMean: 5.045811, expStd: 0.02868 },
  {
    name: "one-sided lower tail",
    mean: 0,
    std: 1,
    a: -Infinity,
    b: -2.5,
    expMean: -2.822745,
    expStd: 0.298285,
  },
  { name: "shifted and scaled", mean: 1, std: 2, a: 0, b: 1, expMean: 0.510327, expStd: 0.287363 },
];

for (const c of TRUNC_CASES) {
  Deno.test(`truncNormal (${c.name}) respects [a, b] and matches the truncated moments`, () => {
    const values = draw({ kind: "truncNormal", mean: c.mean, std: c.std, a: c.a, b: c.b }, 3);
    const { mean, std, min, max } = stats(values);
    assert(min >= Math.fround(c.a) && max <= Math.fround(c.b), `range [${min}, ${max}]`);
    near(mean, c.expMean, 5 * c.expStd / Math.sqrt(N), "mean");
    near(std, c.expStd, 0.02 * c.expStd, "std");
  });
}

Deno.test("truncNormal with PyTorch's ViT defaults (std 0.02, a −2, b 2) is a plain N(0, 0.02²)", () => {
  const { mean, std, min, max } = stats(
    draw({ kind: "truncNormal", std: 0.02, a: -2, b: 2 }, 4),
  );
  assert(min >= -2 && max <= 2);
  near(mean, 0, 0.0003, "mean");
  near(std, 0.02, 0.0004, "std");
});

Deno.test("truncNormal edge cases: zero std and a = b give the clamped mean", () => {
  const rng = new Rng(5);
  assert.deepEqual(
    initialValues({ kind: "truncNormal", std: 0, mean: 3, a: -1, b: 1 }, [3], rng),
    new Float32Array([1, 1, 1]),
  );
  assert.deepEqual(
    initialValues({ kind: "truncNormal", std: 1, a: 0.5, b: 0.5 }, [2], rng),
    new Float32Array([0.5, 0.5]),
  );
});

Deno.test("draws are deterministic per seed and fill row-major from the same stream", () => {
  const rule: InitRule = { kind: "normal", std: 1 };
  assert.deepEqual(draw(rule, 9, [4, 5]), draw(rule, 9, [20]));
  assert.notDeepEqual(draw(rule, 9, [20]), draw(rule, 10, [20]));
});

Deno.test("invalid rules are rejected with a clear message", () => {
  const rng = new Rng(0);
  assert.throws(
    () => initialValues({ kind: "normal", std: -1 }, [2], rng),
    /normal init needs a finite std ≥ 0, got -1/,
  );
  assert.throws(
    () => initialValues({ kind: "truncNormal", std: 1, a: 2, b: 1 }, [2], rng),
    /truncNormal init needs a ≤ b and a finite mean, got a=2, b=1, mean=0/,
  );
  assert.throws(
    () => initialValues({ kind: "uniform", low: 1, high: 0 }, [2], rng),
    /uniform init needs finite low ≤ high, got low=1, high=0/,
  );
  assert.throws(
    () => initialValues({ kind: "torchDefault", fanIn: 0 }, [2], rng),
    /torchDefault init needs a positive fanIn, got 0/,
  );
});
