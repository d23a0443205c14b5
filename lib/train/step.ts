/**
 * The iBOT training artifact: one graph that runs the teacher on the global crops, the student on
 * the masked global crops and the local crops, the iBOT loss, the backward pass, per-tensor
 * gradient clipping, AdamW (with the official parameter groups and last-layer freezing), the EMA
 * teacher update and the centre update, and returns the updated state plus loss, cls, patch and
 * the official "acc" statistic.
 *
 * Only what the loss uses is computed: the student head runs on CLS tokens and on the masked
 * patch slots only; the teacher's last layer runs on the CLS token, the slots, and one mean
 * bottleneck vector per crop (the mean of the raw patch logits, by linearity, for `center2`).
 *
 * The parts of the step are exported: `split_step.ts` builds the same step as two graphs around
 * the gradient all-reduce of data-parallel training.
 *
 * @module
 */

import { Graph } from "../graph/graph.ts";
import { grad } from "../graph/grad.ts";
import {
  add,
  cast,
  div,
  equal,
  greater,
  logicalNot,
  minimum,
  mul,
  type Operand,
  stopGradient,
  sub,
  where,
} from "../graph/math.ts";
import { argMax, l2Norm, mean, sum } from "../graph/reduce.ts";
import { concat, gather, reshape, slice, split } from "../graph/shape.ts";
import type { Tensor } from "../graph/tensor.ts";
import { agreement, ibotLoss, type IbotLossTerms, updateCenters } from "../losses/ibot.ts";
import {
  clsLastLayer,
  headBottleneck,
  type HeadConfig,
  patchLastLayer,
  patchPrototypes,
} from "../models/head.ts";
import { dropPathRates } from "../models/vit.ts";
import {
  backboneBlocks,
  type BackboneConfig,
  backboneTokens,
  patchGrid,
} from "../models/backbone.ts";
import {
  adamwScalars,
  adamwScalarValues,
  adamwStepFactors,
  adamwStepValues,
  type AdamWTarget,
  applyAdamW,
  expAvgName,
  expAvgSqName,
} from "../optim/adamw.ts";
import { nextStateName } from "../runtime/store.ts";

/** Everything that fixes the shapes and the structure of the training graph. */
export interface IbotStepConfig {
  /** Backbone of both networks; the student gets `masked_embed` when `useMaskedImModeling`. */
  readonly backbone: BackboneConfig;
  /** The student's head (and the sizes of the teacher's). */
  readonly studentHead: HeadConfig;
  /** The teacher's head: same sizes, its own `sharedHead` (`shared_head_teacher`). */
  readonly teacherSharedHead: boolean;
  /** Student last-layer gains `weight_g` frozen at 1 (`norm_last_layer`). */
  readonly normLastLayer: boolean;
  /** Whether the student gets the mask token and the masks (`use_masked_im_modeling`). */
  readonly useMaskedImModeling: boolean;
  /** Images per crop (per step). */
  readonly batch: number;
  /** Number of global crops G. */
  readonly globalCrops: number;
  /** Side of the global crops in pixels. */
  readonly globalSize: number;
  /** Number of local crops. */
  readonly localCrops: number;
  /** Side of the local crops in pixels. */
  readonly localSize: number;
  /** M: an upper bound on the masked patches of one global crop. */
  readonly maskSlots: number;
  /**
   * S: the patch slots of this build, a flat axis across the batch (a bucket of
   * `slot_buckets.ts`); defaults to G·B·M, the most masked patches a batch can hold.
   */
  readonly slots?: number;
  /** Student stochastic-depth rate (`drop_path`). */
  readonly dropPath: number;
  /** Per-tensor gradient-norm clip (`clip_grad`); 0 disables. */
  readonly clipGrad: number;
  /** Weight of the CLS loss term. */
  readonly lambda1: number;
  /** Weight of the masked-patch loss term. */
  readonly lambda2: number;
  /**
   * Precision of the matrix products (the graph's autocast policy, see `GraphOptions`); the
   * parameters, the Adam moments and everything else stay float32. Default `fp32`.
   */
  readonly precision?: TrainingPrecision;
  /**
   * Dynamic loss scaling (`GradScaler`, on for fp16): the step takes the scalar input
   * `loss_scale`, differentiates loss·scale, unscales the gradients before clipping, and returns
   * `found_inf`, 1 when a gradient holds an inf or a NaN; the student and its moments are then
   * left unchanged, while the teacher's EMA and the centres update. Default off.
   */
  readonly lossScaling?: boolean;
}

/** The precisions of training: float32, or fp16 or bf16 matrix products (mixed precision). */
export type TrainingPrecision = "fp32" | "fp16" | "bf16";

/** The graph's autocast policy of each training precision. */
const MATMUL_PRECISION = {
  fp32: "float32",
  fp16: "float16",
  bf16: "bfloat16",
} as const satisfies Record<TrainingPrecision, string>;

/**
 * Names of the step's data and scalar inputs, besides AdamW's own (`ADAMW_SCALAR_INPUTS`, for the
 * student's step count). The last layer counts its own AdamW steps (it does not step while
 * frozen), so it has its own bias-correction factors, `adamwStepValues` of that count.
 */
export const STEP_INPUTS = {
  globals: "globals",
  locals: "locals",
  masks: "masks",
  slotIndices: "slot_indices",
  slotWeights: "slot_weights",
  dropPathGlobal: "drop_path_global",
  dropPathLocal: "drop_path_local",
  momentum: "momentum",
  teacherTemp: "teacher_temp",
  teacherPatchTemp: "teacher_patch_temp",
  lastLayerActive: "last_layer_active",
  lastLayerStepSize: "last_layer_step_size",
  lastLayerBiasCorrection2Sqrt: "last_layer_bias_correction2_sqrt",
  lossScale: "loss_scale",
} as const;

/**
 * What each of the step's data and scalar inputs holds, for readers of an exported graph
 * (G global crops, L local crops, B images each, N patches of a global crop, S patch slots).
 */
export const STEP_INPUT_MEANINGS: Readonly<Record<string, string>> = {
  [STEP_INPUTS.globals]:
    "the global crops [G·B, 3, H, H], crop-major (all images of crop 0 first), normalised",
  [STEP_INPUTS.locals]: "the local crops [L·B, 3, h, h], crop-major, normalised",
  [STEP_INPUTS.masks]: "one mask per global-crop row [G·B, N], row-major patch grid, 1 = masked",
  [STEP_INPUTS.slotIndices]: "[S]: the batch's masked patches, row by row, as the flat token " +
    "index row·(1 + N) + 1 + patch (CLS first), then padding up to S pointing at token 1 " +
    "(S is this graph's slot count; a batch may not mask more patches than S)",
  [STEP_INPUTS.slotWeights]: "[S]: each slot's weight in the patch term, " +
    "1 / (max(masked patches of its row, 1) · G·B) for a masked patch, 0 for padding",
  [STEP_INPUTS.dropPathGlobal]: "the student's drop-path factors on the global crops " +
    "[depth, 2 (attention, MLP), G·B]: floor(1 − p + U[0, 1)) / (1 − p) for block rate p, " +
    "1 where p = 0",
  [STEP_INPUTS.dropPathLocal]: "the same for the local crops [depth, 2, L·B]",
  [STEP_INPUTS.momentum]: "the teacher's EMA momentum of this iteration",
  [STEP_INPUTS.teacherTemp]: "the teacher temperature of the CLS term in this epoch",
  [STEP_INPUTS.teacherPatchTemp]: "the teacher temperature of the patch term in this epoch",
  [STEP_INPUTS.lastLayerActive]: "1 when the last layer trains this iteration, 0 while frozen",
  [STEP_INPUTS.lastLayerStepSize]:
    "lr / (1 − β₁ᵗ) for the last layer's own step count t (any finite value while frozen)",
  [STEP_INPUTS.lastLayerBiasCorrection2Sqrt]:
    "√(1 − β₂ᵗ) for the last layer's own step count t (any finite value while frozen)",
  [STEP_INPUTS.lossScale]: "the dynamic loss scale (GradScaler's scale; only with loss scaling)",
};

/** One iteration's schedule values and AdamW step counts, from which the scalar inputs follow. */
export interface StepScalars {
  /** Learning rate of the iteration. */
  readonly lr: number;
  /** Weight decay of the iteration (of the decayed parameter group). */
  readonly weightDecay: number;
  /** The student's AdamW step count t of this iteration, from 1. */
  readonly step: number;
  /** Whether the last layer trains in this iteration (it is frozen in the first epochs). */
  readonly lastLayerActive: boolean;
  /** The last layer's own AdamW step count of this iteration, from 1; ignored while frozen. */
  readonly lastLayerStep: number;
  /** Teacher EMA momentum of the iteration. */
  readonly momentum: number;
  /** Teacher temperature of the CLS term. */
  readonly teacherTemp: number;
  /** Teacher temperature of the patch term. */
  readonly teacherPatchTemp: number;
  /** The loss scale, for a step built with `lossScaling` only (`GradScaler`'s scale). */
  readonly lossScale?: number;
}

/**
 * The values of every scalar input of the step for one iteration, keyed by input name, with
 * AdamW's bias corrections computed in float64 (see `adamwScalarValues`).
 */
export function stepScalarValues(s: StepScalars): Record<string, number> {
  const lastLayer = adamwStepValues(s.lr, Math.max(1, s.lastLayerStep));
  return {
    ...adamwScalarValues(s.lr, s.weightDecay, s.step),
    [STEP_INPUTS.lastLayerActive]: s.lastLayerActive ? 1 : 0,
    [STEP_INPUTS.lastLayerStepSize]: lastLayer.stepSize,
    [STEP_INPUTS.lastLayerBiasCorrection2Sqrt]: lastLayer.biasCorrection2Sqrt,
    [STEP_INPUTS.momentum]: s.momentum,
    [STEP_INPUTS.teacherTemp]: s.teacherTemp,
    [STEP_INPUTS.teacherPatchTemp]: s.teacherPatchTemp,
    ...(s.lossScale === undefined ? {} : { [STEP_INPUTS.lossScale]: s.lossScale }),
  };
}

/** Names of the step's statistics outputs. */
export const STEP_OUTPUTS = ["loss", "cls", "patch", "acc"] as const;

/** Name of the output holding the teacher's CLS argmax on global crop 0, int64 [B]. */
export const TEACHER_PREDICTION = "teacher_prediction";

/**
 * Name of the output of a step built with loss scaling: float32 1 when some gradient of
 * loss·scale holds an inf or a NaN (the step was skipped), else 0.
 */
export const FOUND_INF = "found_inf";

/** Names of the loss centres in the state. */
export const CENTER_NAMES = { center: "ibot_loss.center", center2: "ibot_loss.center2" } as const;

/** The built training graph and what the trainer needs to drive it. */
export interface IbotStep {
  /** The training graph. */
  readonly graph: Graph;
  /** Student parameters that AdamW updates (their moments are state too). */
  readonly trainable: readonly string[];
  /** Every state tensor the step updates (each has a `<name>.next` output). */
  readonly updatedState: readonly string[];
  /** Student parameters whose names contain `last_layer` (frozen during `freeze_last_layer`). */
  readonly lastLayer: readonly string[];
}

/** Prefix of the student's and the teacher's parameter names in the state. */
export const STUDENT = "student";
export const TEACHER = "teacher";

/** Builds the training graph. */
export function buildIbotStep(config: IbotStepConfig): IbotStep {
  const g = trainingGraph("ibot_train_step", config);
  const loss = declareIbotLoss(g, config);
  const params = trainableParams(g, config);
  const { gradients, lossScale } = scaledGradients(g, config, loss.terms.loss, params);
  const emaNames = appendStudentTeacherUpdate(
    g,
    config,
    params,
    gradients,
    lossScale ? div(1, lossScale) : undefined,
  );
  appendCenterUpdate(g, centerBatchSums(loss), config.globalCrops * config.batch);
  const trainable = params.map((t) => t.name);
  return {
    graph: g,
    trainable,
    updatedState: updatedStateNames(trainable, emaNames),
    lastLayer: lastLayerNames(trainable),
  };
}

/** An empty graph for a part of the training step, with the autocast policy of its precision. */
export function trainingGraph(name: string, config: IbotStepConfig): Graph {
  return new Graph(name, { matmulPrecision: MATMUL_PRECISION[config.precision ?? "fp32"] });
}

/** What the forward pass and the loss leave for the rest of the step (B images per crop). */
export interface StepLoss {
  /** The loss terms; `loss` = `cls` + `patch`, a scalar. */
  readonly terms: IbotLossTerms;
  /** The teacher's CLS logits of the global crops, [G·B, K], crop-major. */
  readonly teacherCls: Tensor;
  /** Each global-crop row's mean teacher patch logits over all its patches, [G·B, Kp]. */
  readonly teacherPatchMean: Tensor;
}

/**
 * Declares in `g` the step's data inputs (crops, masks, slots, drop-path factors, teacher
 * temperatures), the centres, the teacher on the global crops, the student on the masked global
 * crops and the local crops, and the iBOT loss; writes the statistics outputs (`STEP_OUTPUTS`
 * and `TEACHER_PREDICTION`).
 */
export function declareIbotLoss(g: Graph, config: IbotStepConfig): StepLoss {
  const { batch: B, globalCrops: G, localCrops: L } = config;
  const S = config.slots ?? G * B * config.maskSlots;
  if (!Number.isInteger(S) || S < 1) {
    g.fail("buildIbotStep", `the patch slot count must be a positive integer, got ${S}`);
  }
  const patches = (config.globalSize / patchGrid(config.backbone)) ** 2;
  const depth = backboneBlocks(config.backbone);
  const rates = dropPathRates(config.dropPath, depth);
  const useDropPath = config.dropPath > 0;
  const teacherHead: HeadConfig = { ...config.studentHead, sharedHead: config.teacherSharedHead };
  const prototypes = patchPrototypes(config.studentHead);
  if (patchPrototypes(teacherHead) !== prototypes) {
    g.fail(
      "buildIbotStep",
      `the student's patch head has ${prototypes} prototypes but the teacher's has ${
        patchPrototypes(teacherHead)
      }`,
    );
  }

  const globals = g.input(STEP_INPUTS.globals, "float32", [
    G * B,
    3,
    config.globalSize,
    config.globalSize,
  ]);
  const locals = L > 0
    ? g.input(STEP_INPUTS.locals, "float32", [L * B, 3, config.localSize, config.localSize])
    : undefined;
  const masks = g.input(STEP_INPUTS.masks, "float32", [G * B, patches]);
  const slotIndices = g.input(STEP_INPUTS.slotIndices, "int64", [S]);
  const slotWeights = g.input(STEP_INPUTS.slotWeights, "float32", [S]);
  const dropGlobal = useDropPath
    ? g.input(STEP_INPUTS.dropPathGlobal, "float32", [depth, 2, G * B])
    : undefined;
  const dropLocal = useDropPath && L > 0
    ? g.input(STEP_INPUTS.dropPathLocal, "float32", [depth, 2, L * B])
    : undefined;
  const teacherTemp = g.input(STEP_INPUTS.teacherTemp, "float32", []);
  const teacherPatchTemp = g.input(STEP_INPUTS.teacherPatchTemp, "float32", []);
  const center = g.param(CENTER_NAMES.center, [1, config.studentHead.outDim], { kind: "zeros" });
  const center2 = g.param(CENTER_NAMES.center2, [1, 1, prototypes], { kind: "zeros" });

  // Teacher: unmasked global crops, head MLP on every token.
  const teacher = g.scope(TEACHER, () => {
    const tokens = backboneTokens(g, config.backbone, false, { images: globals });
    const dim = tokens.shape[2];
    const bottleneck = headBottleneck(
      g,
      teacherHead,
      reshape(tokens, [G * B * (1 + patches), dim]),
    );
    const width = bottleneck.shape[1];
    const perCrop = reshape(bottleneck, [G * B, 1 + patches, width]);
    const cls = clsLastLayer(
      g,
      teacherHead,
      reshape(slice(perCrop, [0], [1], [1]), [G * B, width]),
    );
    const patchMean = patchLastLayer(
      g,
      teacherHead,
      mean(slice(perCrop, [1], [1 + patches], [1]), [1]),
    );
    const slots = patchLastLayer(g, teacherHead, gather(bottleneck, slotIndices, 0));
    return { cls, patchMean, slots };
  });

  // Student: masked global crops and local crops; head on CLS tokens and slots only.
  const student = g.scope(STUDENT, () => {
    const backbone = config.backbone;
    const masked = config.useMaskedImModeling;
    const globalTokens = backboneTokens(g, backbone, masked, {
      images: globals,
      mask: masked ? masks : undefined,
      dropPath: dropGlobal,
      dropPathRates: rates,
    });
    const dim = globalTokens.shape[2];
    const rows = [reshape(slice(globalTokens, [0], [1], [1]), [G * B, dim])];
    if (locals) {
      const localTokens = backboneTokens(g, backbone, masked, {
        images: locals,
        dropPath: dropLocal,
        dropPathRates: rates,
      });
      rows.push(reshape(slice(localTokens, [0], [1], [1]), [L * B, dim]));
    }
    rows.push(gather(reshape(globalTokens, [G * B * (1 + patches), dim]), slotIndices, 0));
    const sizes = rows.map((r) => r.shape[0]);
    const bottleneck = split(headBottleneck(g, config.studentHead, concat(rows, 0)), sizes, 0);
    const slots = bottleneck.pop()!;
    const cls = clsLastLayer(g, config.studentHead, concat(bottleneck, 0));
    return { cls, patch: patchLastLayer(g, config.studentHead, slots) };
  });

  const terms = ibotLoss({
    studentCls: student.cls,
    studentPatch: student.patch,
    teacherCls: teacher.cls,
    teacherPatch: teacher.slots,
    slotWeights,
    center,
    center2,
    teacherTemp,
    teacherPatchTemp,
    globalCrops: G,
    lambda1: config.lambda1,
    lambda2: config.lambda2,
  });
  for (const name of STEP_OUTPUTS.slice(0, 3)) g.output(name, terms[name as "loss"]);
  g.output("acc", agreement(teacher.cls, student.cls, B));
  g.output(TEACHER_PREDICTION, argMax(slice(teacher.cls, [0], [B], [0]), 1));
  return { terms, teacherCls: teacher.cls, teacherPatchMean: teacher.patchMean };
}

/**
 * The student parameters AdamW updates, in declaration order: all of them except the frozen
 * last-layer gains `weight_g` under `normLastLayer`.
 */
export function trainableParams(g: Graph, config: IbotStepConfig): Tensor[] {
  return g.params
    .filter((s) => s.name.startsWith(`${STUDENT}.`))
    .filter((s) => !(config.normLastLayer && s.name.endsWith(".weight_g")))
    .map((s) => g.paramTensor(s.name));
}

/**
 * The backward pass: the gradients of the loss with respect to `params`, or with loss scaling
 * (`GradScaler`) those of loss·scale, the seed of the backward pass being the scalar input
 * `loss_scale` it declares and returns (matrix products in float16 then see scaled gradients).
 */
export function scaledGradients(
  g: Graph,
  config: IbotStepConfig,
  loss: Tensor,
  params: readonly Tensor[],
): { gradients: Tensor[]; lossScale?: Tensor } {
  if (!config.lossScaling) return { gradients: grad(loss, params) };
  const lossScale = g.input(STEP_INPUTS.lossScale, "float32", []);
  return { gradients: grad(loss, params, lossScale), lossScale };
}

/**
 * Appends the update of the student and the teacher to `g`, given each trainable parameter's
 * gradient: multiplies them by `factor` when given (1/scale unscales the gradients of loss·scale),
 * checks them for infs and NaNs under loss scaling (output `found_inf`), clips them per tensor,
 * steps AdamW with the official groups and last-layer freezing (skipped on `found_inf`), then
 * moves the teacher by EMA toward the updated student. Declares the scalar inputs (momentum,
 * last-layer gate and factors, AdamW's) and the moments; writes `<name>.next` for the parameters,
 * their moments and the teacher. Returns the teacher parameters the EMA updates.
 */
export function appendStudentTeacherUpdate(
  g: Graph,
  config: IbotStepConfig,
  params: readonly Tensor[],
  gradients: readonly Tensor[],
  factor?: Tensor,
): string[] {
  const momentum = g.input(STEP_INPUTS.momentum, "float32", []);
  const lastLayerActive = g.input(STEP_INPUTS.lastLayerActive, "float32", []);
  const lastLayerFactors = adamwStepFactors(g, {
    stepSize: STEP_INPUTS.lastLayerStepSize,
    biasCorrection2Sqrt: STEP_INPUTS.lastLayerBiasCorrection2Sqrt,
  });
  const unscaled = factor ? gradients.map((gradient) => mul(gradient, factor)) : gradients;
  const foundInf = config.lossScaling
    ? foundNonFinite(unscaled, params, config.clipGrad > 0 ? undefined : lastLayerActive)
    : undefined;
  const clipped = unscaled.map((gradient) =>
    config.clipGrad > 0 ? clipNorm(gradient, config.clipGrad) : gradient
  );
  const scalars = adamwScalars(g);
  const targets: AdamWTarget[] = params.map((param, i) => ({
    param,
    grad: clipped[i],
    decay: !param.name.endsWith(".bias") && param.rank > 1,
    gate: param.name.includes("last_layer")
      ? { active: lastLayerActive, factors: lastLayerFactors }
      : undefined,
  }));
  const updated = applyAdamW(g, targets, scalars, {}, foundInf);
  if (foundInf) g.output(FOUND_INF, cast(foundInf, "float32"));

  // EMA teacher: θt ← m·θt + (1 − m)·θs for parameters of the same name.
  const studentNames = new Set(
    g.params.filter((s) => s.name.startsWith(`${STUDENT}.`)).map((s) => s.name),
  );
  const emaNames: string[] = [];
  for (const spec of g.params.filter((s) => s.name.startsWith(`${TEACHER}.`))) {
    const studentName = studentCounterpart(spec.name);
    if (!studentNames.has(studentName)) continue;
    const source = updated.get(studentName) ?? g.paramTensor(studentName);
    const t = g.paramTensor(spec.name);
    g.output(nextStateName(spec.name), add(t, mul(sub(source, t), sub(1, momentum))));
    emaNames.push(spec.name);
  }
  return emaNames;
}

/** The student parameter a teacher parameter follows by EMA: the same name under `student.`. */
export function studentCounterpart(teacherName: string): string {
  return `${STUDENT}.${teacherName.slice(TEACHER.length + 1)}`;
}

/** The teacher's batch sums that the centre update averages (over all ranks when distributed). */
export interface CenterSums {
  /** Σ over the global-crop rows of the teacher's CLS logits, [1, K]. */
  readonly center: Tensor;
  /** Σ over the global-crop rows of each row's mean patch logits, [1, 1, Kp]. */
  readonly center2: Tensor;
}

/** The batch sums of the centre update (`update_center`'s `torch.sum` before its all-reduce). */
export function centerBatchSums(loss: StepLoss): CenterSums {
  const prototypes = loss.teacherPatchMean.shape[1];
  return {
    center: sum(stopGradient(loss.teacherCls), [0], true),
    center2: reshape(sum(stopGradient(loss.teacherPatchMean), [0], true), [1, 1, prototypes]),
  };
}

/**
 * Appends the centre update from batch sums over `rows` global-crop rows in all (G·B times the
 * world size): c ← 0.9·c + 0.1·Σ/rows for both centres; writes their `<name>.next`.
 */
export function appendCenterUpdate(g: Graph, sums: CenterSums, rows: Operand): void {
  const center = g.paramTensor(CENTER_NAMES.center);
  const center2 = g.paramTensor(CENTER_NAMES.center2);
  // The batch means are the mean over a single row of logits.
  const clsMean = div(sums.center, rows);
  const patchMean = reshape(div(sums.center2, rows), [1, center2.shape[2]]);
  const centers = updateCenters(center, center2, clsMean, patchMean);
  g.output(nextStateName(CENTER_NAMES.center), centers.center);
  g.output(nextStateName(CENTER_NAMES.center2), centers.center2);
}

/**
 * Every state tensor a step updates, in order: the trainable parameters, their first and second
 * moments, the teacher parameters the EMA moves (`emaNames`) and the two centres.
 */
export function updatedStateNames(
  trainable: readonly string[],
  emaNames: readonly string[],
): string[] {
  return [
    ...trainable,
    ...trainable.map(expAvgName),
    ...trainable.map(expAvgSqName),
    ...emaNames,
    CENTER_NAMES.center,
    CENTER_NAMES.center2,
  ];
}

/** The trainable parameters of the last layer(s) (frozen during `freeze_last_layer`). */
export function lastLayerNames(trainable: readonly string[]): string[] {
  return trainable.filter((n) => n.includes("last_layer"));
}

/** Per-tensor clipping (`utils.clip_gradients`): g · min(1, clip / (‖g‖ + 1e-6)). */
function clipNorm(gradient: Tensor, clip: number): Tensor {
  const norm = l2Norm(gradient);
  return mul(gradient, minimum(div(clip, add(norm, 1e-6)), 1));
}

/**
 * A bool scalar, true when some gradient holds an inf or a NaN (Σ g·0 is NaN exactly then), as
 * `GradScaler` checks them. Given `lastLayerActive` (no clipping, so the check happens in
 * `scaler.step`, after the frozen last layer's gradients were cancelled), the gradients of the
 * last layer count only while it trains.
 */
function foundNonFinite(
  gradients: readonly Tensor[],
  params: readonly Tensor[],
  lastLayerActive?: Tensor,
): Tensor {
  const probes = gradients.map((gradient, i) => {
    const probe = reshape(sum(mul(gradient, 0)), [1]);
    return lastLayerActive && params[i].name.includes("last_layer")
      ? where(greater(lastLayerActive, 0), probe, 0)
      : probe;
  });
  const total = sum(concat(probes, 0));
  return logicalNot(equal(total, total));
}
