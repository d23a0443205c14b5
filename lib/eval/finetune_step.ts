/**
 * The fine-tuning artifacts: the training step — classifier forward with drop path, soft-target
 * cross-entropy, our autodiff's backward, optional gradient-norm clipping, and AdamW with one
 * learning rate (and weight decay) per parameter group of layer-wise lr decay — and the
 * evaluation graph (the same classifier, no drop path, logits out). Schedules are host-side: each
 * step is fed its groups' AdamW factors (see `groupScalarValues` in lib/optim/layer_decay.ts).
 *
 * Inputs of the step: `images` [B, 3, S, S], `targets` [B, C] (soft targets), `drop_path`
 * [depth, 2, B] when the rate is > 0, `step_size.<group>` for every group, `decay_factor.<group>`
 * for the decayed groups, `bias_correction2_sqrt`, and the state: every trained parameter (graph
 * names, `backbone.…`) and its moments `exp_avg.<name>`, `exp_avg_sq.<name>`. Outputs: `loss`
 * and each state tensor's `<name>.next`.
 *
 * @module
 */

import { Graph } from "../graph/graph.ts";
import { grad } from "../graph/grad.ts";
import { add, div, minimum, mul, sqrt } from "../graph/math.ts";
import { sum } from "../graph/reduce.ts";
import type { Tensor } from "../graph/tensor.ts";
import { softTargetCrossEntropy } from "../losses/soft_target_ce.ts";
import { classifier, type ClassifierConfig, classifierKey } from "../models/classifier.ts";
import { dropPathRates } from "../models/vit.ts";
import { ADAMW_SCALAR_INPUTS, type AdamWConfig, applyAdamW } from "../optim/adamw.ts";
import { groupScalarNames, type ParameterGroup, parameterGroups } from "../optim/layer_decay.ts";

/** Input names of the fine-tuning step besides the state and the AdamW factors. */
export const FINETUNE_INPUTS = {
  images: "images",
  targets: "targets",
  dropPath: "drop_path",
} as const;

/** What the step is built for. */
export interface FinetuneStepConfig {
  /** The classifier. */
  readonly model: ClassifierConfig;
  /** Images per step B. */
  readonly batch: number;
  /** Image side S in pixels. */
  readonly imageSize: number;
  /** Stochastic-depth rate (`--drop_path`): block i drops with rate·i/(depth − 1). */
  readonly dropPath: number;
  /** The parameter groups (official keys), from {@link finetuneParameterGroups}. */
  readonly groups: readonly ParameterGroup[];
  /** Clip the gradients' global 2-norm to this (`--clip_grad`); omitted: no clipping. */
  readonly clipGrad?: number;
  /** AdamW's β₁, β₂ and eps (PyTorch defaults). */
  readonly adamw?: AdamWConfig;
}

/**
 * The trained parameters of a classifier: graph names and official keys with shapes, in the
 * model's order.
 */
export function classifierParams(
  model: ClassifierConfig,
  imageSize: number,
): { name: string; key: string; shape: readonly number[] }[] {
  const g = new Graph("classifier_params");
  classifier(g, model, { images: g.input("images", "float32", [1, 3, imageSize, imageSize]) });
  return g.params.map((p) => ({
    name: p.name,
    key: classifierKey(p.name),
    shape: p.shape,
  }));
}

/** The official parameter groups of the classifier for `layerDecay` (1: none). */
export function finetuneParameterGroups(
  model: ClassifierConfig,
  imageSize: number,
  layerDecay: number,
): ParameterGroup[] {
  const params = classifierParams(model, imageSize).map(({ key, shape }) => ({ name: key, shape }));
  return parameterGroups(params, { layerDecay, layers: model.backbone.depth });
}

/**
 * `torch.nn.utils.clip_grad_norm_`: every gradient times min(1, maxNorm / (‖g‖ + 1e-6)), ‖g‖ the
 * 2-norm over all of them.
 */
function clipGradNorm(grads: readonly Tensor[], maxNorm: number): Tensor[] {
  const squares = grads.map((g) => sum(mul(g, g)));
  const total = sqrt(squares.reduce((a, b) => add(a, b)));
  const coefficient = minimum(div(maxNorm, add(total, 1e-6)), 1);
  return grads.map((g) => mul(g, coefficient));
}

/** Builds the training step graph (see the module notes for its inputs and outputs). */
export function buildFinetuneStep(config: FinetuneStepConfig): Graph {
  const { model, batch, imageSize, groups } = config;
  const depth = model.backbone.depth;
  const g = new Graph("finetune_step");
  const images = g.input(FINETUNE_INPUTS.images, "float32", [batch, 3, imageSize, imageSize]);
  const targets = g.input(FINETUNE_INPUTS.targets, "float32", [batch, model.numClasses]);
  const dropPath = config.dropPath > 0
    ? g.input(FINETUNE_INPUTS.dropPath, "float32", [depth, 2, batch])
    : undefined;
  const logits = classifier(g, model, {
    images,
    dropPath,
    dropPathRates: dropPathRates(config.dropPath, depth),
  });
  const loss = softTargetCrossEntropy(logits, targets);
  g.output("loss", loss);

  const params = g.params.map((p) => g.paramTensor(p.name));
  const raw = grad(loss, params);
  const grads = config.clipGrad === undefined ? raw : clipGradNorm(raw, config.clipGrad);
  const gradOf = new Map(
    params.map((p, i) => [classifierKey(p.name), { param: p, grad: grads[i] }]),
  );
  const biasCorrection2Sqrt = g.input(ADAMW_SCALAR_INPUTS.biasCorrection2Sqrt, "float32", []);
  for (const group of groups) {
    const names = groupScalarNames(group);
    const stepSize = g.input(names.stepSize, "float32", []);
    const decayFactor = group.decay ? g.input(names.decayFactor, "float32", []) : g.scalar(1);
    const targetsOfGroup = group.params.map((key) => {
      const entry = gradOf.get(key) ??
        g.fail("buildFinetuneStep", `group ${group.name} names ${key}, not a parameter`);
      gradOf.delete(key);
      return { ...entry, decay: group.decay };
    });
    applyAdamW(g, targetsOfGroup, { stepSize, biasCorrection2Sqrt, decayFactor }, config.adamw);
  }
  if (gradOf.size > 0) {
    g.fail("buildFinetuneStep", `no group holds ${[...gradOf.keys()].join(", ")}`);
  }
  return g;
}

/** Builds the evaluation graph: `images` [B, 3, S, S] → `logits` [B, C], no drop path. */
export function buildFinetuneEval(
  model: ClassifierConfig,
  batch: number,
  imageSize: number,
): Graph {
  const g = new Graph("finetune_eval");
  const images = g.input(FINETUNE_INPUTS.images, "float32", [batch, 3, imageSize, imageSize]);
  g.output("logits", classifier(g, model, { images }));
  return g;
}
