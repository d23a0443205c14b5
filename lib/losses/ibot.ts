/**
 * The iBOT loss (`main_ibot.py: iBOTLoss`), in-graph: cross-view self-distillation of the CLS
 * token and same-view distillation of the masked patch tokens, with centred, sharpened teacher
 * distributions, plus the centre update.
 *
 * Patch terms are computed on "slots": S gathered patch positions of the whole batch (a flat axis
 * across the global-crop rows), each with its weight in the patch term. With every patch as a slot
 * and mask / (max(masked count of its row, 1) · rows) as weights this is exactly the official
 * formula; with only the masked positions (plus zero-weight padding) it computes the same loss
 * without the work on unmasked patches (their cross-entropy is multiplied by 0 officially).
 *
 * @module
 */

import { argMax } from "../graph/reduce.ts";
import { add, cast, div, equal, mul, neg, stopGradient, sub } from "../graph/math.ts";
import { logSoftmax, softmax } from "../graph/nn.ts";
import { mean, sum } from "../graph/reduce.ts";
import { reshape, slice, split } from "../graph/shape.ts";
import type { Tensor } from "../graph/tensor.ts";

/** Student temperature of both heads (hard-coded officially). */
export const STUDENT_TEMPERATURE = 0.1;
/** Momentum of both centres (hard-coded officially). */
export const CENTER_MOMENTUM = 0.9;

/** What the loss consumes. B = images per crop, G = global crops, A = all crops. */
export interface IbotLossInputs {
  /** Student CLS logits of all crops, crop-major: [A·B, K] (global crops first). */
  readonly studentCls: Tensor;
  /** Student patch logits at the slots: [S, Kp]. */
  readonly studentPatch: Tensor;
  /** Teacher CLS logits of the global crops: [G·B, K]. */
  readonly teacherCls: Tensor;
  /** Teacher patch logits at the same slots: [S, Kp]. */
  readonly teacherPatch: Tensor;
  /**
   * Each slot's weight in the patch term, [S]: 1 / (max(masked count of its row, 1) · G·B) for
   * a masked patch, 0 for padding or an unmasked patch.
   */
  readonly slotWeights: Tensor;
  /** Centre of the CLS logits [1, K] (the old value). */
  readonly center: Tensor;
  /** Centre of the patch logits [1, 1, Kp] (the old value). */
  readonly center2: Tensor;
  /** CLS teacher temperature of this epoch (scalar). */
  readonly teacherTemp: Tensor;
  /** Patch teacher temperature of this epoch (scalar). */
  readonly teacherPatchTemp: Tensor;
  /** Number of global crops G. */
  readonly globalCrops: number;
  /** Weight of the CLS term. */
  readonly lambda1: number;
  /** Weight of the masked-patch term. */
  readonly lambda2: number;
}

/** The loss terms; `cls` and `patch` include their lambdas, `loss` is their sum. */
export interface IbotLossTerms {
  /** cls + patch. */
  readonly loss: Tensor;
  /** The CLS distillation term, times lambda1. */
  readonly cls: Tensor;
  /** The masked-patch term, times lambda2. */
  readonly patch: Tensor;
}

/**
 * The iBOT loss of §4.2: L_cls = λ1 · mean over pairs q ≠ v of mean_b CE(teacher q, student v)
 * and L_mim = λ2 · mean over q of mean_b [Σ over masked patches of CE / max(1, masked count)]
 * = λ2 · Σ over slots of CE·w. Teacher terms carry no gradient.
 */
export function ibotLoss(inputs: IbotLossInputs): IbotLossTerms {
  const { globalCrops: G } = inputs;
  const rows = inputs.teacherCls.shape[0];
  const batch = rows / G;
  const allCrops = inputs.studentCls.shape[0] / batch;
  const K = inputs.teacherCls.shape[1];
  const Kp = inputs.teacherPatch.shape[1];

  // Teacher distributions, centred with the old centres and sharpened; no gradient.
  const teacherCls = stopGradient(
    softmax(div(sub(inputs.teacherCls, inputs.center), inputs.teacherTemp)),
  );
  const teacherPatch = stopGradient(
    softmax(
      div(sub(inputs.teacherPatch, reshape(inputs.center2, [1, Kp])), inputs.teacherPatchTemp),
    ),
  );
  const studentCls = logSoftmax(div(inputs.studentCls, STUDENT_TEMPERATURE));
  const studentPatch = logSoftmax(div(inputs.studentPatch, STUDENT_TEMPERATURE));

  // CLS: Σ over q of Σ over v ≠ q of mean_b −t_q·s_v = Σ_q mean_b −t_q·(Σ_v s_v − s_q).
  const studentByCrop = reshape(studentCls, [allCrops, batch, K]);
  const studentSum = sum(studentByCrop, [0]);
  const teacherByCrop = split(reshape(teacherCls, [G, batch, K]), Array(G).fill(1), 0);
  let clsTotal: Tensor | undefined;
  for (let q = 0; q < G; q++) {
    const tq = reshape(teacherByCrop[q], [batch, K]);
    const sq = reshape(slice(studentByCrop, [q], [q + 1], [0]), [batch, K]);
    const term = mean(sum(neg(mul(tq, sub(studentSum, sq))), [1]));
    clsTotal = clsTotal ? add(clsTotal, term) : term;
  }
  // With one crop in all there is no cross-view pair; the official code divides 0 by 0.
  const pairs = G * allCrops - G;
  const cls = mul(clsTotal!, pairs > 0 ? inputs.lambda1 / pairs : 0);

  // MIM: same-view pairs only; the weights average over each image's masked patches, then over
  // the images of all global crops.
  const crossEntropy = sum(neg(mul(teacherPatch, studentPatch)), [1]);
  const patch = mul(sum(mul(crossEntropy, inputs.slotWeights)), inputs.lambda2);

  return { loss: add(cls, patch), cls, patch };
}

/**
 * The centre update of §4.3 (after the loss, no gradient): c ← 0.9·c + 0.1·mean over rows of the
 * raw teacher CLS logits [G·B, K]; c2 ← 0.9·c2 + 0.1·mean over rows of each row's mean patch
 * logits [G·B, Kp] (over all patches). Returns the new [1, K] and [1, 1, Kp] centres.
 */
export function updateCenters(
  center: Tensor,
  center2: Tensor,
  teacherCls: Tensor,
  teacherPatchMean: Tensor,
): { center: Tensor; center2: Tensor } {
  const clsMean = mean(stopGradient(teacherCls), [0], true);
  const patchMean = reshape(mean(stopGradient(teacherPatchMean), [0], true), center2.shape);
  return {
    center: add(mul(center, CENTER_MOMENTUM), mul(clsMean, 1 - CENTER_MOMENTUM)),
    center2: add(mul(center2, CENTER_MOMENTUM), mul(patchMean, 1 - CENTER_MOMENTUM)),
  };
}

/**
 * The official "acc" statistic: the fraction of images whose teacher CLS argmax on global crop 0
 * equals the student CLS argmax on global crop 1. Both logits crop-major, B rows per crop.
 */
export function agreement(teacherCls: Tensor, studentCls: Tensor, batch: number): Tensor {
  const teacherTop = argMax(slice(teacherCls, [0], [batch], [0]), 1);
  const studentTop = argMax(slice(studentCls, [batch], [2 * batch], [0]), 1);
  return mean(cast(equal(teacherTop, studentTop), teacherCls.dtype));
}
