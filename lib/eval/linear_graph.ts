/**
 * The graphs of a linear-probing sweep on the runtime: one SGD step of every classifier of the
 * sweep at once, and the top-1/top-5 counts of every classifier on a chunk of test rows.
 *
 * The L classifiers of the sweep, each `Linear(dim, C)`, are stacked as rows l·C + c of one
 * weight [L·C, dim] and one bias [L·C], so that a mini-batch goes through all of them in one
 * matrix product; the log-softmax is taken per classifier over its C logits. The step graph sums
 * the classifiers' mean cross-entropies: as no classifier's loss depends on another's weights,
 * the gradient of that sum is every classifier's own gradient. Our autodiff writes the backward
 * pass and the update is PyTorch's SGD with momentum and weight decay:
 * d = g + wd·p, buf ← m·buf + d, p ← p − lr·buf, with one lr per classifier fed each step. A
 * momentum buffer starting at zero gives PyTorch's first step (buf = d).
 *
 * @module
 */

import { Graph } from "../graph/graph.ts";
import { grad } from "../graph/grad.ts";
import { linear } from "../graph/linalg.ts";
import { add, cast, equal, greater, less, logicalAnd, mul, neg, sub } from "../graph/math.ts";
import { logSoftmax } from "../graph/nn.ts";
import { sum } from "../graph/reduce.ts";
import { reshape, unsqueeze } from "../graph/shape.ts";
import type { Tensor } from "../graph/tensor.ts";
import { nextStateName } from "../runtime/store.ts";

/** Names of the sweep's state tensors: stacked parameters and their momentum buffers. */
export const LINEAR_STATE = {
  /** [L·C, dim]: classifier l's weight is rows l·C … l·C + C − 1 (PyTorch's (out, in) layout). */
  weight: "linear.weight",
  /** [L·C]. */
  bias: "linear.bias",
  /** [L·C, dim]: SGD momentum buffer of the weight. */
  weightMomentum: "linear.weight.momentum_buffer",
  /** [L·C]: SGD momentum buffer of the bias. */
  biasMomentum: "linear.bias.momentum_buffer",
} as const;

/** Names of the data inputs and the statistic outputs of the sweep's graphs. */
export const LINEAR_IO = {
  /** [rows, dim] float32 features. */
  features: "features",
  /** [rows] int64 class indices (any valid class on padding rows). */
  labels: "labels",
  /**
   * [rows] float32: the step graph's 1/count on the batch's real rows and 0 on padding rows
   * (so the loss is the mean over the real rows); the evaluation graph's 1 and 0.
   */
  rowWeights: "row_weights",
  /** [L·C] float32: each stacked row's learning rate (its classifier's lr at this step). */
  lr: "lr",
  /** Step output [L]: each classifier's mean cross-entropy over the batch's real rows. */
  loss: "loss",
  /** Evaluation output [L]: real rows whose label ranks first, per classifier. */
  top1: "top1",
  /** Evaluation output [L]: real rows whose label ranks among the first five, per classifier. */
  top5: "top5",
} as const;

/** The shape of a sweep's graphs. */
export interface LinearSweepShape {
  /** Rows per run (the mini-batch, or the evaluation chunk). */
  readonly rows: number;
  /** Feature width. */
  readonly dim: number;
  /** Classes per classifier (C). */
  readonly classes: number;
  /** Classifiers in the sweep (L). */
  readonly sweep: number;
}

/** The SGD settings a step graph bakes in. */
export interface LinearStepSettings {
  /** SGD momentum m. */
  readonly momentum: number;
  /** SGD weight decay wd, on weights and biases as PyTorch applies it. */
  readonly weightDecay: number;
}

/** Declares the stacked weight and bias (their values come from the state, not these rules). */
function declareClassifiers(g: Graph, shape: LinearSweepShape): { weight: Tensor; bias: Tensor } {
  const rows = shape.sweep * shape.classes;
  return {
    weight: g.param(LINEAR_STATE.weight, [rows, shape.dim], { kind: "normal", std: 0.01 }),
    bias: g.param(LINEAR_STATE.bias, [rows], { kind: "zeros" }),
  };
}

/** Logits [rows, L, C] of every classifier, and the one-hot labels [rows, 1, C]. */
function logitsAndTargets(g: Graph, shape: LinearSweepShape, weight: Tensor, bias: Tensor) {
  const { rows, dim, classes, sweep } = shape;
  const features = g.input(LINEAR_IO.features, "float32", [rows, dim]);
  const labels = g.input(LINEAR_IO.labels, "int64", [rows]);
  const rowWeights = g.input(LINEAR_IO.rowWeights, "float32", [rows]);
  const logits = reshape(linear(features, weight, bias), [rows, sweep, classes]);
  const classIndex = g.constant(Array.from({ length: classes }, (_, c) => c), "int64", [
    1,
    classes,
  ]);
  const labelColumn = unsqueeze(labels, [1]);
  return {
    logits,
    rowWeights,
    oneHot: unsqueeze(cast(equal(labelColumn, classIndex), "float32"), [1]),
    /** [rows, 1, C]: classes below each row's label (they win ties against it). */
    below: unsqueeze(less(classIndex, labelColumn), [1]),
  };
}

/**
 * One SGD step of the whole sweep on a mini-batch of `shape.rows` rows. Parameters and momentum
 * buffers are the {@link LINEAR_STATE} tensors, with their `<name>.next` outputs; fed each step:
 * features, labels, row weights and the per-row lr ({@link LINEAR_IO}); output: each
 * classifier's mean loss.
 */
export function buildLinearStepGraph(shape: LinearSweepShape, settings: LinearStepSettings): Graph {
  const g = new Graph("linear_sweep_step");
  const rowsLC = shape.sweep * shape.classes;
  const { weight, bias } = declareClassifiers(g, shape);
  const weightMomentum = g.param(LINEAR_STATE.weightMomentum, [rowsLC, shape.dim], {
    kind: "zeros",
  });
  const biasMomentum = g.param(LINEAR_STATE.biasMomentum, [rowsLC], { kind: "zeros" });
  const lr = g.input(LINEAR_IO.lr, "float32", [rowsLC]);
  const { logits, rowWeights, oneHot } = logitsAndTargets(g, shape, weight, bias);
  const crossEntropy = neg(sum(mul(logSoftmax(logits, -1), oneHot), [2]));
  const loss = sum(mul(crossEntropy, unsqueeze(rowWeights, [1])), [0]);
  const [gradWeight, gradBias] = grad(sum(loss), [weight, bias]);
  const update = (p: Tensor, g0: Tensor, buffer: Tensor, rate: Tensor, name: string) => {
    const d = settings.weightDecay === 0 ? g0 : add(g0, mul(p, settings.weightDecay));
    const next = add(mul(buffer, settings.momentum), d);
    g.output(nextStateName(`${name}.momentum_buffer`), next);
    g.output(nextStateName(name), sub(p, mul(next, rate)));
  };
  update(weight, gradWeight, weightMomentum, unsqueeze(lr, [1]), LINEAR_STATE.weight);
  update(bias, gradBias, biasMomentum, lr, LINEAR_STATE.bias);
  g.output(LINEAR_IO.loss, loss);
  return g;
}

/**
 * Top-1 and top-5 counts of every classifier of the sweep on a chunk of `shape.rows` test rows:
 * a row counts when fewer than 1 (or 5) classes beat its label, a class beating it when its
 * logit is higher, or equal and the class lower (ties rank the lower class first). Rows of
 * weight 0 (padding) do not count.
 */
export function buildLinearEvalGraph(shape: LinearSweepShape): Graph {
  const g = new Graph("linear_sweep_eval");
  const { weight, bias } = declareClassifiers(g, shape);
  const { logits, rowWeights, oneHot, below } = logitsAndTargets(g, shape, weight, bias);
  const target = sum(mul(logits, oneHot), [2], true);
  const ahead = add(
    cast(greater(logits, target), "float32"),
    cast(logicalAnd(equal(logits, target), below), "float32"),
  );
  const rank = sum(ahead, [2]);
  const weights = unsqueeze(rowWeights, [1]);
  const count = (k: number) => sum(mul(cast(less(rank, k), "float32"), weights), [0]);
  g.output(LINEAR_IO.top1, count(1));
  g.output(LINEAR_IO.top5, count(5));
  return g;
}
