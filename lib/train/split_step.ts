/**
 * The training step split into two graphs around the all-reduce of data-parallel training, in the
 * official order: each rank computes the gradients of its batch, the ranks average them (DDP),
 * then every rank unscales, clips, cancels the frozen last layer, steps AdamW and moves the
 * teacher by EMA; `update_center` all-reduces the teacher's batch sums.
 *
 * The gradient graph (one per patch-slot bucket, like the fused step) runs the forward pass, the
 * loss and the backward pass of one rank's batch. It returns every trainable gradient in one flat
 * float32 vector `grads` (one all-reduce moves them all; {@link GradSlice} says where each lies),
 * the centres' batch sums, and the statistics of that batch. The update graph takes the sums of
 * those over the ranks, divides them by the rank count and the global row count, and does the rest
 * of the fused step (`step.ts`), with the same `<name>.next` outputs. It depends on neither the
 * slots nor the batch size, so one compiled update graph serves every bucket and world size.
 *
 * On one rank (`grad_divisor` 1, `center_rows` G·B) the two graphs give the fused step's results.
 *
 * @module
 */

import { Graph, type ParamSpec } from "../graph/graph.ts";
import { concat, reshape, slice } from "../graph/shape.ts";
import { div, mul } from "../graph/math.ts";
import type { Shape } from "../graph/tensor.ts";
import {
  appendCenterUpdate,
  appendStudentTeacherUpdate,
  CENTER_NAMES,
  centerBatchSums,
  declareIbotLoss,
  type IbotStepConfig,
  lastLayerNames,
  scaledGradients,
  STEP_INPUTS,
  studentCounterpart,
  TEACHER,
  trainableParams,
  trainingGraph,
  updatedStateNames,
} from "./step.ts";

/**
 * Names of the values that cross the all-reduce, and of the update graph's divisors:
 * - `grads` [total]: every trainable gradient, flattened and concatenated in the layout's order;
 *   of the loss (of loss·scale with loss scaling) out of the gradient graph, summed over the
 *   ranks into the update graph;
 * - `center_sum` [1, K]: Σ over the global-crop rows of the teacher's CLS logits, likewise;
 * - `center2_sum` [1, 1, Kp]: Σ over the global-crop rows of each row's mean teacher patch logits
 *   over all its patches, likewise;
 * - `grad_divisor` (scalar): the number of ranks whose gradients `grads` sums (the world size);
 * - `center_rows` (scalar): the global-crop rows the centre sums cover, G·B·world size.
 */
export const SPLIT_STEP_VALUES = {
  grads: "grads",
  centerSum: "center_sum",
  center2Sum: "center2_sum",
  gradDivisor: "grad_divisor",
  centerRows: "center_rows",
} as const;

/** Where one trainable gradient lies in the flat `grads` vector. */
export interface GradSlice {
  /** The parameter's name in the state. */
  readonly name: string;
  /** Its first element's index in `grads`. */
  readonly offset: number;
  /** Its element count. */
  readonly size: number;
  /** Its shape (the gradient's elements are in row-major order). */
  readonly shape: Shape;
}

/** A gradient graph and the layout of its flat `grads` output. */
export interface IbotGradientStep {
  /** The graph: parameters and batch inputs in; `grads`, the centre sums and statistics out. */
  readonly graph: Graph;
  /** Each trainable parameter's slice of `grads`, in order, back to back from 0. */
  readonly layout: readonly GradSlice[];
}

/** The two graphs of the split step and what the trainer needs to drive them. */
export interface SplitIbotStep {
  /** The gradient graph at the config's slot count (build others with `buildIbotGradientStep`). */
  readonly gradient: Graph;
  /** The update graph: the same for every slot count, batch size and world size. */
  readonly update: Graph;
  /** Each trainable parameter's slice of `grads`, in order, back to back from 0. */
  readonly layout: readonly GradSlice[];
  /** Student parameters that AdamW updates, in the layout's order. */
  readonly trainable: readonly string[];
  /** Every state tensor the update graph updates (each has a `<name>.next` output). */
  readonly updatedState: readonly string[];
  /** Trainable parameters whose names contain `last_layer` (frozen during `freeze_last_layer`). */
  readonly lastLayer: readonly string[];
}

/**
 * Builds the gradient graph of one rank's batch at the config's slot count: the fused step's
 * inputs but the moments and the update scalars (momentum, last-layer gate, AdamW's); outputs
 * `grads`, `center_sum`, `center2_sum` and the statistics (`STEP_OUTPUTS`, `TEACHER_PREDICTION`).
 */
export function buildIbotGradientStep(config: IbotStepConfig): IbotGradientStep {
  const g = trainingGraph("ibot_gradient_step", config);
  const loss = declareIbotLoss(g, config);
  const params = trainableParams(g, config);
  const { gradients } = scaledGradients(g, config, loss.terms.loss, params);
  g.output(
    SPLIT_STEP_VALUES.grads,
    concat(gradients.map((gradient) => reshape(gradient, [gradient.size])), 0),
  );
  const sums = centerBatchSums(loss);
  g.output(SPLIT_STEP_VALUES.centerSum, sums.center);
  g.output(SPLIT_STEP_VALUES.center2Sum, sums.center2);
  let offset = 0;
  const layout = params.map((param) => {
    const entry = { name: param.name, offset, size: param.size, shape: param.shape };
    offset += param.size;
    return entry;
  });
  return { graph: g, layout };
}

/** Builds the gradient graph at the config's slot count and the update graph. */
export function buildSplitIbotStep(config: IbotStepConfig): SplitIbotStep {
  const gradient = buildIbotGradientStep(config);
  const update = buildUpdateGraph(config, gradient.graph.params, gradient.layout);
  const trainable = gradient.layout.map((s) => s.name);
  return {
    gradient: gradient.graph,
    update: update.graph,
    layout: gradient.layout,
    trainable,
    updatedState: updatedStateNames(trainable, update.emaNames),
    lastLayer: lastLayerNames(trainable),
  };
}

/**
 * The values of the update graph's divisors for `worldSize` ranks of `config.batch` images each,
 * keyed by input name.
 */
export function splitStepDivisors(
  config: IbotStepConfig,
  worldSize: number,
): Record<string, number> {
  if (!Number.isInteger(worldSize) || worldSize < 1) {
    throw new Error(`the world size must be a positive integer, got ${worldSize}`);
  }
  return {
    [SPLIT_STEP_VALUES.gradDivisor]: worldSize,
    [SPLIT_STEP_VALUES.centerRows]: config.globalCrops * config.batch * worldSize,
  };
}

/**
 * The update graph: declares the state it reads (the trainable parameters, the teacher
 * parameters that follow a student one and those student ones, the centres; the moments come
 * with AdamW), the summed `grads` and centre sums, the divisors and the step scalars.
 */
function buildUpdateGraph(
  config: IbotStepConfig,
  params: readonly ParamSpec[],
  layout: readonly GradSlice[],
): { graph: Graph; emaNames: string[] } {
  const g = new Graph("ibot_update_step");
  const names = new Set(params.map((s) => s.name));
  const followed = params
    .filter((s) => s.name.startsWith(`${TEACHER}.`) && names.has(studentCounterpart(s.name)))
    .map((s) => s.name);
  const needed = new Set([
    ...layout.map((s) => s.name),
    ...followed,
    ...followed.map(studentCounterpart),
    CENTER_NAMES.center,
    CENTER_NAMES.center2,
  ]);
  for (const spec of params.filter((s) => needed.has(s.name))) {
    g.param(spec.name, spec.shape, spec.init, spec.dtype);
  }

  const total = layout.reduce((count, s) => count + s.size, 0);
  const grads = g.input(SPLIT_STEP_VALUES.grads, "float32", [total]);
  const divisor = g.input(SPLIT_STEP_VALUES.gradDivisor, "float32", []);
  const lossScale = config.lossScaling ? g.input(STEP_INPUTS.lossScale, "float32", []) : undefined;
  // Average over the ranks, and unscale the gradients of loss·scale (GradScaler.unscale_).
  const factor = div(1, lossScale ? mul(lossScale, divisor) : divisor);
  const gradients = layout.map((s) =>
    reshape(slice(grads, [s.offset], [s.offset + s.size], [0]), s.shape)
  );
  const trainable = layout.map((s) => g.paramTensor(s.name));
  const emaNames = appendStudentTeacherUpdate(g, config, trainable, gradients, factor);

  const center = g.paramTensor(CENTER_NAMES.center);
  const center2 = g.paramTensor(CENTER_NAMES.center2);
  const sums = {
    center: g.input(SPLIT_STEP_VALUES.centerSum, "float32", center.shape),
    center2: g.input(SPLIT_STEP_VALUES.center2Sum, "float32", center2.shape),
  };
  appendCenterUpdate(g, sums, g.input(SPLIT_STEP_VALUES.centerRows, "float32", []));
  return { graph: g, emaNames };
}
