/**
 * Layer-wise learning-rate decay for fine-tuning (BEiT's `optim_factory.py`, used by iBOT's
 * `classification_layer_decay`): every parameter gets a layer id — 0 for the embeddings
 * (`cls_token`, `mask_token`, `pos_embed`, `patch_embed.*`), j + 1 for block j (a Swin counts its
 * blocks across stages, a patch merging as the last block of its stage), L + 1 for everything
 * else (final norm, `fc_norm`, the head) — and the learning rate lr · decay^(L + 1 − id). Weight
 * decay applies to every parameter except 1-D ones, biases and the model's skip list
 * (`pos_embed`, `cls_token`).
 *
 * The parameter groups are those of the official `get_parameter_groups`: one per (layer id,
 * decay or not), named `layer_<id>_decay` / `layer_<id>_no_decay` (`decay` / `no_decay` without
 * layer decay), in order of first appearance.
 *
 * @module
 */

import type { Shape } from "../graph/tensor.ts";
import { ADAMW_SCALAR_INPUTS, type AdamWConfig, adamwStepValues } from "./adamw.ts";

/** The official model's `no_weight_decay()` skip list. */
export const NO_WEIGHT_DECAY: readonly string[] = ["pos_embed", "cls_token"];

/**
 * The layer id of a ViT parameter (official key, e.g. `blocks.3.mlp.fc1.weight`) for a model with
 * `numLayers` blocks (`get_num_layer_for_vit` with num_max_layer = numLayers + 2).
 */
export function vitLayerId(name: string, numLayers: number): number {
  if (name === "cls_token" || name === "mask_token" || name === "pos_embed") return 0;
  if (name.startsWith("patch_embed")) return 0;
  if (name.startsWith("rel_pos_bias")) return numLayers + 1;
  if (name.startsWith("blocks.")) return Number(name.split(".")[1]) + 1;
  return numLayers + 1;
}

/**
 * The layer id of a Swin parameter (`get_num_layer_for_swin`): block b of stage s is layer
 * depths[0] + … + depths[s − 1] + b + 1; a stage's other parameters (its patch merging) count as
 * its last block; parameters outside the stages count as in {@link vitLayerId}.
 */
export function swinLayerId(name: string, depths: readonly number[]): number {
  if (!name.startsWith("layers.")) return vitLayerId(name, depths.reduce((a, b) => a + b, 0));
  const parts = name.split(".");
  const stage = Number(parts[1]);
  const block = name.includes("blocks") ? Number(parts[3]) : depths[stage] - 1;
  return depths.slice(0, stage).reduce((a, b) => a + b, 0) + block + 1;
}

/** The lr scale of each layer id 0 … numLayers + 1: decay^(numLayers + 1 − id). */
export function layerScales(decay: number, numLayers: number): number[] {
  return Array.from({ length: numLayers + 2 }, (_, id) => decay ** (numLayers + 1 - id));
}

/** True when weight decay skips the parameter: 1-D, a bias, or in `skip`. */
export function skipsWeightDecay(
  name: string,
  shape: Shape,
  skip: readonly string[] = NO_WEIGHT_DECAY,
): boolean {
  return shape.length === 1 || name.endsWith(".bias") || skip.includes(name);
}

/** One parameter group: its lr scale, weight decay (0 or the run's) and parameters (official keys). */
export interface ParameterGroup {
  /** `layer_<id>_decay`, `layer_<id>_no_decay`, or `decay` / `no_decay` without layer decay. */
  readonly name: string;
  /** The layer id, or undefined without layer decay. */
  readonly layerId?: number;
  /** Multiplies the scheduled learning rate. */
  readonly lrScale: number;
  /** Whether the scheduled weight decay applies (false: weight decay 0). */
  readonly decay: boolean;
  /** Parameter names in the model's order. */
  readonly params: string[];
}

/** How to group a model's parameters. */
export interface LayerDecayOptions {
  /** Decay per layer (official `--layer_decay`); 1 or more disables layer decay as officially. */
  readonly layerDecay: number;
  /** Blocks of a ViT, or the blocks per stage of a Swin. */
  readonly layers: number | readonly number[];
  /** Names that skip weight decay besides 1-D parameters and biases (default {@link NO_WEIGHT_DECAY}). */
  readonly skip?: readonly string[];
}

/**
 * The official parameter groups of `params` (official keys and shapes, in the model's order):
 * groups in order of first appearance, each parameter in the group of its layer id and decay.
 */
export function parameterGroups(
  params: readonly { readonly name: string; readonly shape: Shape }[],
  options: LayerDecayOptions,
): ParameterGroup[] {
  const { layerDecay, layers } = options;
  const numLayers = typeof layers === "number" ? layers : layers.reduce((a, b) => a + b, 0);
  const useLayers = layerDecay < 1;
  const scales = layerScales(layerDecay, numLayers);
  const groups = new Map<string, ParameterGroup>();
  for (const { name, shape } of params) {
    const decay = !skipsWeightDecay(name, shape, options.skip);
    const suffix = decay ? "decay" : "no_decay";
    const layerId = !useLayers
      ? undefined
      : typeof layers === "number"
      ? vitLayerId(name, layers)
      : swinLayerId(name, layers);
    const groupName = layerId === undefined ? suffix : `layer_${layerId}_${suffix}`;
    let group = groups.get(groupName);
    if (!group) {
      const lrScale = layerId === undefined ? 1 : scales[layerId];
      group = { name: groupName, layerId, lrScale, decay, params: [] };
      groups.set(groupName, group);
    }
    group.params.push(name);
  }
  return [...groups.values()];
}

/** Graph input names of a group's AdamW scalars. */
export function groupScalarNames(group: ParameterGroup): { stepSize: string; decayFactor: string } {
  return { stepSize: `step_size.${group.name}`, decayFactor: `decay_factor.${group.name}` };
}

/**
 * The per-group AdamW inputs of one step, by input name, computed in float64 as PyTorch does
 * with each group's lr = lr · lrScale: `step_size.<group>` = lr·scale / (1 − β₁ᵗ) and, for decayed
 * groups, `decay_factor.<group>` = 1 − lr·scale·wd; plus the shared `bias_correction2_sqrt`.
 */
export function groupScalarValues(
  groups: readonly ParameterGroup[],
  lr: number,
  weightDecay: number,
  step: number,
  config: AdamWConfig = {},
): Record<string, number> {
  const values: Record<string, number> = {};
  for (const group of groups) {
    const groupLr = lr * group.lrScale;
    const { stepSize, biasCorrection2Sqrt } = adamwStepValues(groupLr, step, config);
    const names = groupScalarNames(group);
    values[names.stepSize] = stepSize;
    if (group.decay) values[names.decayFactor] = 1 - groupLr * weightDecay;
    values[ADAMW_SCALAR_INPUTS.biasCorrection2Sqrt] = biasCorrection2Sqrt;
  }
  return values;
}
