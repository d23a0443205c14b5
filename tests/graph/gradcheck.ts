/**
 * Test helper: checks an op's VJP against central finite differences in float64, and that the
 * float32 graph's gradients agree with the float64 ones.
 */

import { assert } from "../assert.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { grad } from "../../lib/graph/grad.ts";
import { mul } from "../../lib/graph/math.ts";
import { sum } from "../../lib/graph/reduce.ts";
import { type Shape, shapeSize, type Tensor, type ValueDType } from "../../lib/graph/tensor.ts";
import { CompiledGraph } from "../../lib/runtime/session.ts";
import { Rng } from "../../lib/runtime/rng.ts";

/** A differentiable function of float inputs, written with graph ops. */
export type Builder = (...inputs: Tensor[]) => Tensor;

/** Options of {@link checkGradients}. */
export interface GradcheckOptions {
  /** Input values; default: uniform in [-1, 1) (or [0.5, 1.5) when `positive`). */
  readonly values?: readonly Float64Array[];
  readonly positive?: boolean;
  /** Finite-difference step (default 1e-6). */
  readonly step?: number;
  /** Relative tolerance of the float64 check (default 1e-6), with `atol` (default 1e-8). */
  readonly rtol?: number;
  readonly atol?: number;
  /** Relative tolerance of float32 against float64 gradients, scaled by the gradient's max. */
  readonly float32Tolerance?: number;
  /** Largest number of entries probed per input (default 24, chosen at random). */
  readonly probes?: number;
  readonly seed?: number;
}

interface GradGraph {
  run(values: readonly Float64Array[]): Promise<{ loss: number; grads: Float64Array[] }>;
}

/** Loss = Σ f(x)·r for a fixed random r, so every output entry gets a distinct weight. */
async function compileLoss(
  build: Builder,
  shapes: readonly Shape[],
  dtype: ValueDType,
  weightSeed: number,
): Promise<GradGraph> {
  const g = new Graph("gradcheck");
  const inputs = shapes.map((s, i) => g.input(`x${i}`, dtype, s));
  const out = build(...inputs);
  const rng = new Rng(weightSeed);
  const weights = g.constant(
    Array.from({ length: out.size }, () => rng.uniform() * 2 - 1),
    dtype,
    out.shape,
  );
  const loss = sum(mul(out, weights));
  g.output("loss", loss);
  grad(loss, inputs).forEach((gi, i) => g.output(`grad${i}`, gi));
  const compiled = await CompiledGraph.create(g, { threads: 1 });
  return {
    async run(values) {
      const feeds = Object.fromEntries(
        values.map((v, i) => [`x${i}`, dtype === "float64" ? v : Float32Array.from(v)]),
      );
      const result = await compiled.run(feeds);
      return {
        loss: Number(result.loss[0]),
        grads: shapes.map((_, i) => Float64Array.from(result[`grad${i}`] as Float32Array)),
      };
    },
  };
}

/**
 * Asserts that the gradients of `build` at random inputs match central finite differences in
 * float64, and that the float32 graph's gradients agree with the float64 ones.
 */
export async function checkGradients(
  build: Builder,
  shapes: readonly Shape[],
  options: GradcheckOptions = {},
): Promise<void> {
  const { step = 1e-6, rtol = 1e-6, atol = 1e-8, probes = 24, seed = 1 } = options;
  const rng = new Rng(seed);
  const values = options.values?.map((v) => Float64Array.from(v)) ??
    shapes.map((s) =>
      Float64Array.from(
        { length: shapeSize(s) },
        () => options.positive ? 0.5 + rng.uniform() : rng.uniform() * 2 - 1,
      )
    );
  const f64 = await compileLoss(build, shapes, "float64", seed + 1);
  const { grads } = await f64.run(values);
  for (let i = 0; i < shapes.length; i++) {
    const n = values[i].length;
    const picks = n <= probes
      ? [...Array(n).keys()]
      : Array.from({ length: probes }, () => rng.int(n));
    for (const j of picks) {
      const saved = values[i][j];
      values[i][j] = saved + step;
      const plus = (await f64.run(values)).loss;
      values[i][j] = saved - step;
      const minus = (await f64.run(values)).loss;
      values[i][j] = saved;
      const numeric = (plus - minus) / (2 * step);
      const analytic = grads[i][j];
      assert(
        Math.abs(analytic - numeric) <= atol + rtol * Math.abs(numeric),
        `input ${i} entry ${j}: analytic ${analytic} vs finite difference ${numeric}`,
      );
    }
  }
  const f32 = await compileLoss(build, shapes, "float32", seed + 1);
  const single = (await f32.run(values.map((v) => Float64Array.from(Float32Array.from(v))))).grads;
  const tolerance = options.float32Tolerance ?? 1e-4;
  single.forEach((gi, i) => {
    const scale = Math.max(1e-6, ...grads[i].map(Math.abs));
    gi.forEach((v, j) => {
      assert(
        Math.abs(v - grads[i][j]) <= tolerance * scale,
        `float32 gradient of input ${i} entry ${j}: ${v} vs float64 ${grads[i][j]}`,
      );
    });
  });
}
