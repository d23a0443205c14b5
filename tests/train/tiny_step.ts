/**
 * The tiny iBOT training step that the step and runtime tests build: its configuration, random
 * masks and the random batch inputs of one iteration.
 *
 * @module
 */

import type { TensorData } from "../../lib/graph/graph.ts";
import { shapeSize } from "../../lib/graph/tensor.ts";
import { expAvgName, expAvgSqName } from "../../lib/optim/adamw.ts";
import type { Rng } from "../../lib/runtime/rng.ts";
import { fillMaskInputs, fillStepDropPath } from "../../lib/train/batch_inputs.ts";
import { type IbotStep, type IbotStepConfig, stepScalarValues } from "../../lib/train/step.ts";

/** Patches per global crop of the tiny step: a 4×4 grid (16 px crops, patch 4). */
export const TINY_PATCHES = 16;

/** What differs between the tiny steps of the tests. */
export interface TinyStepOptions {
  /**
   * One head for the CLS and the patch tokens, in the student and the teacher (patch out_dim
   * 32); otherwise each network has a patch head of its own (patch out_dim 24). Default false.
   */
  readonly sharedHead?: boolean;
  /** M, the bound on the masked patches of one global crop. Default 8. */
  readonly maskSlots?: number;
  /** The student's stochastic-depth rate. Default 0.1. */
  readonly dropPath?: number;
}

/**
 * A tiny iBOT: ViT of width 32, depth 2, 2 heads, patch 4 on 16 px images; 2 global crops of
 * 16 px and 2 local crops of 8 px (their position embedding is interpolated) of 4 images; heads of
 * out_dim 32 (hidden 48, bottleneck 16); fp32.
 */
export function tinyStepConfig(options: TinyStepOptions = {}): IbotStepConfig {
  const { sharedHead = false, maskSlots = 8, dropPath = 0.1 } = options;
  return {
    backbone: { embedDim: 32, depth: 2, heads: 2, patchSize: 4, imgSize: 16 },
    studentHead: {
      outDim: 32,
      patchOutDim: sharedHead ? 32 : 24,
      sharedHead,
      hiddenDim: 48,
      bottleneckDim: 16,
    },
    teacherSharedHead: sharedHead,
    normLastLayer: false,
    useMaskedImModeling: true,
    batch: 4,
    globalCrops: 2,
    globalSize: 16,
    localCrops: 2,
    localSize: 8,
    maskSlots,
    dropPath,
    clipGrad: 3,
    lambda1: 1,
    lambda2: 0.5,
  };
}

/** `rows` random masks of {@link TINY_PATCHES} cells, each with 4 cells drawn (with repeats). */
export function randomTinyMasks(rows: number, rng: Rng): Uint8Array[] {
  return Array.from({ length: rows }, () => {
    const mask = new Uint8Array(TINY_PATCHES);
    for (let k = 0; k < 4; k++) mask[rng.int(TINY_PATCHES)] = 1;
    return mask;
  });
}

/**
 * The batch inputs of one iteration of `step` (built from `config`) at `slots` patch slots: the
 * inputs of `masks` (one per global-crop row), crops drawn from a normal distribution, the
 * drop-path draws and the schedule scalars of AdamW step `adamStep` (from 1). The state inputs
 * (the Adam moments) are left out: they come from the state.
 */
export function tinyBatchFeeds(
  step: IbotStep,
  config: IbotStepConfig,
  masks: readonly Uint8Array[],
  slots: number,
  adamStep: number,
  rng: Rng,
): Record<string, TensorData> {
  const feeds: Record<string, TensorData> = {};
  fillMaskInputs(feeds, masks, slots, TINY_PATCHES);
  const scalars = stepScalarValues({
    lr: 0.01,
    weightDecay: 0.04,
    step: adamStep,
    lastLayerActive: true,
    lastLayerStep: adamStep,
    momentum: 0.99,
    teacherTemp: 0.04,
    teacherPatchTemp: 0.07,
  });
  for (const [name, value] of Object.entries(scalars)) feeds[name] = Float32Array.of(value);
  const moments = new Set(step.trainable.flatMap((name) => [expAvgName(name), expAvgSqName(name)]));
  for (const input of step.graph.inputs) {
    if (feeds[input.name] || moments.has(input.name)) continue;
    feeds[input.name] = Float32Array.from({ length: shapeSize(input.shape) }, () => rng.normal());
  }
  fillStepDropPath(feeds, config, rng);
  return feeds;
}
