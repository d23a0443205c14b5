import assert from "node:assert/strict";
import { Rng } from "../../lib/runtime/rng.ts";

const N = 100_000;

/** Mean and (population) variance of n draws. */
function moments(draw: () => number, n = N): { mean: number; variance: number } {
  let sum = 0;
  let sumSq = 0;
  for (let i = 0; i < n; i++) {
    const x = draw();
    sum += x;
    sumSq += x * x;
  }
  const mean = sum / n;
  return { mean, variance: sumSq / n - mean * mean };
}

function near(actual: number, expected: number, tolerance: number, what: string): void {
  assert(
    Math.abs(actual - expected) <= tolerance,
    `${what}: ${actual} is not within ${tolerance} of ${expected}`,
  );
}

Deno.test("xoshiro128** matches the reference outputs for state [1, 2, 3, 4]", () => {
  const rng = Rng.fromState({ s: [1, 2, 3, 4], spare: null });
  const outputs = Array.from({ length: 6 }, () => rng.uint32());
  assert.deepEqual(outputs, [11520, 0, 5927040, 70819200, 2031721883, 1637235492]);
});

Deno.test("the same seed gives the same stream, different seeds differ", () => {
  const a = new Rng(42);
  const b = new Rng(42);
  const c = new Rng(43);
  const drawsA = Array.from({ length: 100 }, () => a.uniform());
  assert.deepEqual(drawsA, Array.from({ length: 100 }, () => b.uniform()));
  assert.notDeepEqual(drawsA, Array.from({ length: 100 }, () => c.uniform()));
});

Deno.test("seeds must be safe integers; negative and 53-bit seeds work", () => {
  assert.throws(() => new Rng(1.5), /Rng seed must be a safe integer, got 1.5/);
  assert.throws(() => new Rng(2 ** 53), /safe integer/);
  assert.notEqual(new Rng(-1).uint32(), new Rng(2 ** 53 - 1).uint32());
});

Deno.test("uniform is in [0, 1) with mean 1/2 and variance 1/12", () => {
  const rng = new Rng(1);
  let min = 1;
  let max = 0;
  const { mean, variance } = moments(() => {
    const u = rng.uniform();
    min = Math.min(min, u);
    max = Math.max(max, u);
    return u;
  });
  assert(min >= 0 && max < 1, `range [${min}, ${max}]`);
  near(mean, 0.5, 0.005, "mean");
  near(variance, 1 / 12, 0.002, "variance");
});

Deno.test("uniformRange stays in [low, high) with mean (low+high)/2 and variance (high−low)²/12", () => {
  const rng = new Rng(2);
  let inside = true;
  const { mean, variance } = moments(() => {
    const x = rng.uniformRange(-3, 5);
    inside &&= x >= -3 && x < 5;
    return x;
  });
  assert(inside);
  near(mean, 1, 0.04, "mean");
  near(variance, 64 / 12, 0.1, "variance");
});

Deno.test("normal has the requested mean and std", () => {
  const rng = new Rng(3);
  const standard = moments(() => rng.normal());
  const scaled = moments(() => rng.normal(3, 0.5));
  near(standard.mean, 0, 0.015, "standard mean");
  near(standard.variance, 1, 0.03, "standard variance");
  near(scaled.mean, 3, 0.008, "scaled mean");
  near(scaled.variance, 0.25, 0.008, "scaled variance");
});

Deno.test("normal tails are Gaussian: P(|z| > 2) ≈ 0.0455", () => {
  const rng = new Rng(5);
  let outside = 0;
  for (let i = 0; i < N; i++) if (Math.abs(rng.normal()) > 2) outside++;
  near(outside / N, 0.0455, 0.004, "tail mass");
});

Deno.test("int(n) is uniform over [0, n) and checks n", () => {
  const rng = new Rng(6);
  const counts = new Array(7).fill(0);
  for (let i = 0; i < 70_000; i++) counts[rng.int(7)]++;
  for (const c of counts) near(c, 10_000, 500, "bucket count");
  assert.equal(rng.int(1), 0);
  const big = rng.int(2 ** 32);
  assert(Number.isInteger(big) && big >= 0 && big < 2 ** 32);
  assert.throws(() => rng.int(0), /Rng.int needs an integer n in \[1, 2\^32\], got 0/);
  assert.throws(() => rng.int(2.5), /got 2.5/);
});

Deno.test("fork is deterministic, does not advance the parent, and depends on the label", () => {
  const parent = new Rng(7);
  const before = parent.state();
  const child = parent.fork("backbone.cls_token");
  assert.deepEqual(parent.state(), before);
  assert.deepEqual(child.state(), parent.fork("backbone.cls_token").state());
  assert.deepEqual(child.state(), new Rng(7).fork("backbone.cls_token").state());
  assert.notDeepEqual(parent.fork(1).state(), parent.fork("1").state());
  assert.notDeepEqual(parent.fork("a").state(), parent.fork("b").state());
  assert.notDeepEqual(new Rng(8).fork("a").state(), parent.fork("a").state());
  assert.notDeepEqual(child.state(), parent.state());
});

Deno.test("forked streams are uncorrelated with each other and with the parent", () => {
  const parent = new Rng(9);
  const a = parent.fork(0);
  const b = parent.fork(1);
  let ab = 0;
  let ap = 0;
  for (let i = 0; i < N; i++) {
    const x = a.normal();
    ab += x * b.normal();
    ap += x * parent.normal();
  }
  near(ab / N, 0, 0.015, "corr(fork 0, fork 1)");
  near(ap / N, 0, 0.015, "corr(fork 0, parent)");
});

Deno.test("state round trip through JSON resumes exactly, including the cached normal", () => {
  const rng = new Rng(10);
  rng.normal();
  const saved = JSON.parse(JSON.stringify(rng.state()));
  assert.notEqual(saved.spare, null);
  const expected = Array.from({ length: 5 }, () => rng.normal());
  const resumed = Rng.fromState(saved);
  assert.deepEqual(Array.from({ length: 5 }, () => resumed.normal()), expected);
  assert.deepEqual(resumed.state(), rng.state());
  assert.throws(() => Rng.fromState({ s: [0, 0, 0, 0], spare: null }), /not all zero/);
  assert.throws(() => Rng.fromState({ s: [1, 2, 3], spare: null }), /four uint32 words/);
  assert.throws(() => Rng.fromState({ s: [1, 2, 3, 4], spare: NaN }), /spare must be/);
});
