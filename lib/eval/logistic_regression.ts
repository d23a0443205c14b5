/**
 * Logistic regression on frozen features (official `eval_logistic_regression.py`, §6): an
 * L2-regularised multinomial logistic regression without intercept on L2-normalised features,
 * fitted once per regularisation λ of a sweep, scored by its top-1 accuracy on the test features.
 *
 * The objective, as cyanure's `MultiClassifier(loss="multiclass-logistic", penalty="l2",
 * fit_intercept=False)` defines it, is
 *
 *   F(W) = (1/n) Σᵢ −log softmax(W xᵢ)[yᵢ] + (λ/2)·‖W‖²,   W ∈ ℝ^{C×dim},
 *
 * strictly convex for λ > 0, so it has one minimiser, which any solver finds. The official script
 * passes each λ of its grid (0.01, 0.1, 1) as it is; DINO's recipe (from cyanure's author, in
 * DINO's issue 121) divides λ by the number of training rows n, so λ = 0.1/n reproduces that one.
 *
 * The official script runs cyanure's catalyst-accelerated MISO; this one runs L-BFGS on the host
 * in float64 (memory {@link LogisticRegressionOptions.history}, starting at W = 0 as cyanure
 * does; a step halved from 1 until the Armijo condition, or the approximate Wolfe conditions where
 * float32 sums cannot resolve the decrease), with the loss and its gradient over the training
 * features computed by a graph on the runtime (float32, our autodiff, chunks of rows; CPU or
 * CUDA) and summed in float64. Each evaluation of F and ∇F is one pass over the features:
 * `maxEpochs` bounds the passes (the official `--epochs`), and the fit stops earlier when
 * ‖∇F‖ ≤ `tolerance`·‖∇F(0)‖ (cyanure's `tol` bounds a duality gap instead).
 *
 * @module
 */

import { Graph } from "../graph/graph.ts";
import { grad } from "../graph/grad.ts";
import { linear } from "../graph/linalg.ts";
import { cast, equal, mul, neg } from "../graph/math.ts";
import { logSoftmax } from "../graph/nn.ts";
import { sum } from "../graph/reduce.ts";
import { unsqueeze } from "../graph/shape.ts";
import type { Device } from "../runtime/ort_session.ts";
import { CompiledGraph } from "../runtime/session.ts";
import { fillRowBlock, type LabelledFeatures } from "./linear.ts";
import { buildLinearEvalGraph, LINEAR_IO, LINEAR_STATE } from "./linear_graph.ts";

/** The official sweep of `--lr_lambd`: λ ∈ {0.01, 0.1, 1}. */
export const OFFICIAL_LAMBDAS: readonly number[] = [0.01, 0.1, 1];

/** Options of {@link fitLogisticRegression} and {@link logisticRegressionSweep}. */
export interface LogisticRegressionOptions {
  /** Regularisations λ of the sweep (default {@link OFFICIAL_LAMBDAS}). */
  readonly lambdas?: readonly number[];
  /** Most passes over the training features, i.e. evaluations of F and ∇F (default 100). */
  readonly maxEpochs?: number;
  /** Stop when ‖∇F(W)‖ ≤ tolerance·‖∇F(0)‖ (default 1e-4). */
  readonly tolerance?: number;
  /** L-BFGS memory: the last `history` steps shape the search direction (default 10). */
  readonly history?: number;
  /** Feature rows per graph run (default 4096); memory is bounded by it. */
  readonly chunk?: number;
  /** Where the graphs run (default `cpu`). */
  readonly device?: Device;
  /** onnxruntime intra-op threads on the CPU (default: every core). */
  readonly threads?: number;
  /** Called after each λ is fitted and scored. */
  readonly onLambda?: (result: LogisticRegressionResult) => void;
}

/** A fitted logistic regression. */
export interface LogisticRegressionFit {
  /** [C, dim], row-major (PyTorch's (out, in) layout); no intercept. */
  readonly weight: Float32Array;
  /** F at the solution. */
  readonly objective: number;
  /** ‖∇F‖ at the solution. */
  readonly gradientNorm: number;
  /** L-BFGS iterations taken. */
  readonly iterations: number;
  /** Passes over the training features (evaluations of F and ∇F). */
  readonly epochs: number;
  /** True when the gradient tolerance was reached within `maxEpochs`. */
  readonly converged: boolean;
}

/** The outcome of one λ of the sweep. */
export interface LogisticRegressionResult extends LogisticRegressionFit {
  /** The regularisation. */
  readonly lambda: number;
  /** Top-1 accuracy on the test features, in percent. */
  readonly top1: number;
  /** Top-5 accuracy on the test features, in percent. */
  readonly top5: number;
}

/** The results of a sweep. */
export interface LogisticRegressionReport {
  /** One entry per λ, in the order given. */
  readonly results: LogisticRegressionResult[];
  /** The entry with the highest top-1 (the first one on ties). */
  readonly best: LogisticRegressionResult;
}

/** Names of the loss graph's outputs. */
const LOSS_IO = { losses: "losses", gradient: "gradient" } as const;

/**
 * The loss graph: rᵢ·CE(W xᵢ, yᵢ) for each row of a chunk with row weights r (1, or 0 on padding
 * rows), summed on the host in float64, and the gradient of their sum with respect to W [C, dim],
 * which is fed as the parameter {@link LINEAR_STATE}.weight.
 */
function buildLossGraph(rows: number, dim: number, classes: number): Graph {
  const g = new Graph("logistic_regression_loss");
  const weight = g.param(LINEAR_STATE.weight, [classes, dim], { kind: "zeros" });
  const features = g.input(LINEAR_IO.features, "float32", [rows, dim]);
  const labels = g.input(LINEAR_IO.labels, "int64", [rows]);
  const rowWeights = g.input(LINEAR_IO.rowWeights, "float32", [rows]);
  const classIndex = g.constant(Array.from({ length: classes }, (_, c) => c), "int64", [
    1,
    classes,
  ]);
  const oneHot = cast(equal(unsqueeze(labels, [1]), classIndex), "float32");
  const crossEntropy = neg(sum(mul(logSoftmax(linear(features, weight), -1), oneHot), [1]));
  const losses = mul(crossEntropy, rowWeights);
  const [gradient] = grad(sum(losses), [weight]);
  g.output(LOSS_IO.losses, losses);
  g.output(LOSS_IO.gradient, gradient);
  return g;
}

function checkFeatures(name: string, data: LabelledFeatures, dim: number, classes: number): number {
  const n = data.labels.length;
  if (data.features.length !== n * dim) {
    throw new Error(`${name} features hold ${data.features.length} values, expected ${n} × ${dim}`);
  }
  for (const label of data.labels) {
    if (!Number.isInteger(label) || label < 0 || label >= classes) {
      throw new Error(`${name} label ${label} is outside [0, ${classes})`);
    }
  }
  return n;
}

function settingsOf(options: LogisticRegressionOptions) {
  const settings = {
    lambdas: options.lambdas ?? OFFICIAL_LAMBDAS,
    maxEpochs: options.maxEpochs ?? 100,
    tolerance: options.tolerance ?? 1e-4,
    history: options.history ?? 10,
    chunk: options.chunk ?? 4096,
  };
  const { lambdas, maxEpochs, tolerance, history, chunk } = settings;
  if (lambdas.length === 0 || lambdas.some((l) => !(l > 0) || !Number.isFinite(l))) {
    throw new Error("lambdas must be a non-empty list of positive numbers");
  }
  if (!Number.isInteger(maxEpochs) || maxEpochs < 1) throw new Error("maxEpochs must be ≥ 1");
  if (!(tolerance >= 0)) throw new Error("tolerance must be a number ≥ 0");
  if (!Number.isInteger(history) || history < 1) throw new Error("history must be ≥ 1");
  if (!Number.isInteger(chunk) || chunk < 1) throw new Error("chunk must be ≥ 1");
  return settings;
}

/** Runs a graph over the rows of `data` chunk by chunk, feeding `weight` as the parameter. */
class ChunkedRunner {
  readonly #session: CompiledGraph;
  readonly #rows: number;
  readonly #feeds: Record<string, Float32Array | BigInt64Array>;

  private constructor(session: CompiledGraph, rows: number, dim: number) {
    this.#session = session;
    this.#rows = rows;
    this.#feeds = {
      [LINEAR_IO.features]: new Float32Array(rows * dim),
      [LINEAR_IO.labels]: new BigInt64Array(rows),
      [LINEAR_IO.rowWeights]: new Float32Array(rows),
    };
  }

  static async create(graph: Graph, rows: number, dim: number, options: LogisticRegressionOptions) {
    const session = await CompiledGraph.create(graph, {
      threads: options.threads,
      executionProviders: [options.device ?? "cpu"],
    });
    return new ChunkedRunner(session, rows, dim);
  }

  /** Calls `take` with each chunk's outputs; `extra` feeds are added to every run. */
  async forEachChunk(
    data: LabelledFeatures,
    extra: Record<string, Float32Array>,
    take: (out: Readonly<Record<string, unknown>>) => void,
  ): Promise<void> {
    const rows = this.#rows;
    const features = this.#feeds[LINEAR_IO.features] as Float32Array;
    const labels = this.#feeds[LINEAR_IO.labels] as BigInt64Array;
    const rowWeights = this.#feeds[LINEAR_IO.rowWeights] as Float32Array;
    const n = data.labels.length;
    for (let start = 0; start < n; start += rows) {
      const count = Math.min(rows, n - start);
      fillRowBlock({ features, labels, rowWeights }, data, start, count);
      take(await this.#session.run({ ...this.#feeds, ...extra }));
    }
  }

  async release(): Promise<void> {
    await this.#session.release();
  }
}

/** F(W) and ∇F(W) in float64, one pass over `train` through the loss graph. */
type Objective = (w: Float64Array) => Promise<{ value: number; gradient: Float64Array }>;

function objectiveOf(runner: ChunkedRunner, train: LabelledFeatures, lambda: number): Objective {
  const n = train.labels.length;
  return async (w) => {
    let loss = 0;
    const gradient = new Float64Array(w.length);
    await runner.forEachChunk(train, { [LINEAR_STATE.weight]: Float32Array.from(w) }, (out) => {
      for (const rowLoss of out[LOSS_IO.losses] as Float32Array) loss += rowLoss;
      const g = out[LOSS_IO.gradient] as Float32Array;
      for (let i = 0; i < g.length; i++) gradient[i] += g[i];
    });
    let squares = 0;
    for (let i = 0; i < w.length; i++) {
      gradient[i] = gradient[i] / n + lambda * w[i];
      squares += w[i] * w[i];
    }
    return { value: loss / n + 0.5 * lambda * squares, gradient };
  };
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/** Halvings of the step before a line search gives up. */
const MAX_HALVINGS = 30;

/**
 * Whether step t along d (slope ∇Fᵀd < 0) is accepted: the Armijo condition
 * F(t) ≤ F(0) + 1e-4·t·slope, or, where float32 sums cannot resolve so small a decrease, Hager
 * and Zhang's approximate Wolfe conditions: F(t) ≤ F(0) + 1e-6·|F(0)| and
 * 0.9·slope ≤ ∇F(t)ᵀd ≤ (1 − 2e-4)·|slope|.
 */
function acceptable(value: number, slope: number, t: number, nextValue: number, nextSlope: number) {
  if (nextValue <= value + 1e-4 * t * slope) return true;
  return nextValue <= value + 1e-6 * Math.abs(value) && nextSlope >= 0.9 * slope &&
    nextSlope <= -(1 - 2e-4) * slope;
}

/**
 * The first of t = 1, 1/2, 1/4, … that is {@link acceptable} along `d` from `w`, trying at most
 * `budget` (and {@link MAX_HALVINGS} + 1) steps; undefined when none is.
 */
async function lineSearch(
  objective: Objective,
  w: Float64Array,
  value: number,
  gradient: Float64Array,
  d: Float64Array,
  budget: number,
) {
  const slope = dot(gradient, d);
  let t = 1;
  let evaluations = 0;
  while (evaluations < budget && evaluations <= MAX_HALVINGS) {
    const trial = Float64Array.from(w, (v, i) => v + t * d[i]);
    const next = await objective(trial);
    evaluations++;
    if (acceptable(value, slope, t, next.value, dot(next.gradient, d))) {
      return { evaluations, accepted: { trial, next } };
    }
    t /= 2;
  }
  return { evaluations, accepted: undefined };
}

/**
 * Minimises a smooth strictly convex F from 0 by L-BFGS: the two-loop recursion over the last
 * `history` pairs (s, y) with the initial scaling sᵀy / yᵀy (the first direction is −∇F, scaled
 * to length 1 when longer), and a step t halved from 1 until {@link acceptable}.
 */
async function lbfgs(
  objective: Objective,
  size: number,
  settings: { maxEpochs: number; tolerance: number; history: number },
): Promise<Omit<LogisticRegressionFit, "weight"> & { w: Float64Array }> {
  let w: Float64Array = new Float64Array(size);
  let { value, gradient } = await objective(w);
  let epochs = 1;
  const threshold = settings.tolerance * Math.sqrt(dot(gradient, gradient));
  const pairs: { s: Float64Array; y: Float64Array; rho: number }[] = [];
  let iterations = 0;
  let converged = Math.sqrt(dot(gradient, gradient)) <= threshold;
  while (!converged && epochs < settings.maxEpochs) {
    const d = Float64Array.from(gradient, (v) => -v);
    const alphas: number[] = [];
    for (let k = pairs.length - 1; k >= 0; k--) {
      const { s, y, rho } = pairs[k];
      alphas[k] = rho * dot(s, d);
      for (let i = 0; i < size; i++) d[i] -= alphas[k] * y[i];
    }
    if (pairs.length > 0) {
      const { s, y } = pairs[pairs.length - 1];
      const gamma = dot(s, y) / dot(y, y);
      for (let i = 0; i < size; i++) d[i] *= gamma;
    } else {
      const norm = Math.sqrt(dot(d, d));
      if (norm > 1) { for (let i = 0; i < size; i++) d[i] /= norm; }
    }
    for (let k = 0; k < pairs.length; k++) {
      const { s, y, rho } = pairs[k];
      const beta = rho * dot(y, d);
      for (let i = 0; i < size; i++) d[i] += (alphas[k] - beta) * s[i];
    }
    const step = await lineSearch(objective, w, value, gradient, d, settings.maxEpochs - epochs);
    epochs += step.evaluations;
    if (!step.accepted) break;
    const { trial, next } = step.accepted;
    const s = Float64Array.from(trial, (v, i) => v - w[i]);
    const y = Float64Array.from(next.gradient, (v, i) => v - gradient[i]);
    const sy = dot(s, y);
    if (sy > 0) {
      pairs.push({ s, y, rho: 1 / sy });
      if (pairs.length > settings.history) pairs.shift();
    }
    w = trial;
    ({ value, gradient } = next);
    iterations++;
    converged = Math.sqrt(dot(gradient, gradient)) <= threshold;
  }
  return {
    w,
    objective: value,
    gradientNorm: Math.sqrt(dot(gradient, gradient)),
    iterations,
    epochs,
    converged,
  };
}

/**
 * Fits the logistic regression of regularisation `lambda` on `train` (features as given: the
 * official protocol L2-normalises them first) with `classes` classes.
 */
export async function fitLogisticRegression(
  train: LabelledFeatures,
  dim: number,
  classes: number,
  lambda: number,
  options: LogisticRegressionOptions = {},
): Promise<LogisticRegressionFit> {
  const settings = settingsOf({ ...options, lambdas: [lambda] });
  const n = checkFeatures("train", train, dim, classes);
  if (n === 0) throw new Error("train has no rows");
  const rows = Math.min(settings.chunk, n);
  const runner = await ChunkedRunner.create(buildLossGraph(rows, dim, classes), rows, dim, options);
  try {
    const { w, ...fit } = await lbfgs(objectiveOf(runner, train, lambda), classes * dim, settings);
    return { weight: Float32Array.from(w), ...fit };
  } finally {
    await runner.release();
  }
}

/**
 * Fits one logistic regression per λ on `train` and scores each on `test` (top-1 and top-5; ties
 * rank the lower class first), as the official script loops over `--lr_lambd`. The best λ is the
 * one with the highest test top-1, as the official printout is read.
 */
export async function logisticRegressionSweep(
  train: LabelledFeatures,
  test: LabelledFeatures,
  dim: number,
  classes: number,
  options: LogisticRegressionOptions = {},
): Promise<LogisticRegressionReport> {
  const { lambdas, chunk } = settingsOf(options);
  checkFeatures("train", train, dim, classes);
  const nTest = checkFeatures("test", test, dim, classes);
  if (nTest === 0) throw new Error("test has no rows");
  const rows = Math.min(chunk, nTest);
  const scorer = await ChunkedRunner.create(
    buildLinearEvalGraph({ rows, dim, classes, sweep: 1 }),
    rows,
    dim,
    options,
  );
  const results: LogisticRegressionResult[] = [];
  try {
    const bias = new Float32Array(classes);
    for (const lambda of lambdas) {
      const fit = await fitLogisticRegression(train, dim, classes, lambda, options);
      let top1 = 0;
      let top5 = 0;
      await scorer.forEachChunk(
        test,
        { [LINEAR_STATE.weight]: fit.weight, [LINEAR_STATE.bias]: bias },
        (out) => {
          top1 += (out[LINEAR_IO.top1] as Float32Array)[0];
          top5 += (out[LINEAR_IO.top5] as Float32Array)[0];
        },
      );
      const result = { lambda, top1: 100 * top1 / nTest, top5: 100 * top5 / nTest, ...fit };
      results.push(result);
      options.onLambda?.(result);
    }
  } finally {
    await scorer.release();
  }
  const best = results.reduce((a, b) => b.top1 > a.top1 ? b : a);
  return { results, best };
}
