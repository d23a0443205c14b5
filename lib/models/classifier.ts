/**
 * The fine-tuning classifier of the official `classification_layer_decay/modeling_finetune.py`
 * (BEiT's ViT) and of the semi-supervised `eval_cls.py`: the ViT backbone (`vit.ts`), then either
 * the final-normed CLS token (`--use_cls`) or the mean of the patch tokens through `fc_norm`
 * (mean pooling, where the official model has no final `norm`), then the classifier:
 * - `head` Linear(D → C), weight trunc-normal 0.02 and bias 0, both times `init_scale` (0.001);
 * - or, fine-tuning from the projection head's first layer (semi-supervised, `ClassProjHead` with
 *   `finetune_head_layer` 1), `head.mlp.0` Linear(D → hidden) + GELU, then `head.cls_head`
 *   Linear(hidden → C).
 *
 * Keys: the official fine-tuning model's state dict has the backbone's keys without a prefix
 * (`cls_token`, `pos_embed`, `patch_embed.proj.*`, `blocks.<i>.*` with a fused `qkv` bias, no
 * `q_bias`/`v_bias`), `norm.*` (CLS) or `fc_norm.*` (mean pooling), and `head.*`. The graph
 * declares the backbone under `backbone.` as every model of this toolkit; {@link classifierKey}
 * and {@link classifierParamName} convert.
 *
 * @module
 */

import type { Graph, InitRule } from "../graph/graph.ts";
import { gelu } from "../graph/nn.ts";
import { mean } from "../graph/reduce.ts";
import { reshape, slice } from "../graph/shape.ts";
import type { Tensor } from "../graph/tensor.ts";
import { layerNorm, linear } from "./layers.ts";
import { vit, type VitConfig } from "./vit.ts";

/** The official `init_scale` of the fine-tuning head. */
export const DEFAULT_INIT_SCALE = 0.001;

/** A classifier's architecture. */
export interface ClassifierConfig {
  /** The ViT backbone. */
  readonly backbone: Omit<VitConfig, "maskedImModeling">;
  /** Number of classes C. */
  readonly numClasses: number;
  /** True: the final-normed CLS token (`--use_cls`); false: mean pooling with `fc_norm`. */
  readonly useCls: boolean;
  /**
   * Width of the projection head's first layer when fine-tuning from it (semi-supervised);
   * omitted for the plain linear head.
   */
  readonly projectionHidden?: number;
  /** Multiplies the initial classifier weight and bias (default {@link DEFAULT_INIT_SCALE}). */
  readonly initScale?: number;
}

/** Inputs of one forward pass. */
export interface ClassifierInputs {
  /** Images [B, 3, S, S]. */
  readonly images: Tensor;
  /** Drop-path scales [depth, 2, B] (keep mask / keep probability); omit for none (evaluation). */
  readonly dropPath?: Tensor;
  /** Each block's drop-path rate (linspace(0, rate, depth)). */
  readonly dropPathRates?: readonly number[];
}

/** Adds the classifier's forward pass to `g`; returns the logits [B, C]. */
export function classifier(g: Graph, config: ClassifierConfig, inputs: ClassifierInputs): Tensor {
  const { embedDim: dim } = config.backbone;
  const batch = inputs.images.dims[0];
  const out = vit(g, { ...config.backbone, maskedImModeling: false }, {
    images: inputs.images,
    dropPath: inputs.dropPath,
    dropPathRates: inputs.dropPathRates,
    finalNorm: config.useCls,
  });
  const [, tokens] = out.lastBlock.dims;
  const features = config.useCls
    ? reshape(slice(out.tokens, [0], [1], [1]), [batch, dim])
    : layerNorm(g, "fc_norm", mean(slice(out.lastBlock, [1], [tokens as number], [1]), [1]), 1e-6);
  const scale = config.initScale ?? DEFAULT_INIT_SCALE;
  const scaled: InitRule = { kind: "truncNormal", std: 0.02 * scale, a: -2 * scale, b: 2 * scale };
  if (config.projectionHidden === undefined) {
    return linear(g, "head", features, config.numClasses, { init: scaled });
  }
  const hidden = gelu(linear(g, "head.mlp.0", features, config.projectionHidden));
  return linear(g, "head.cls_head", hidden, config.numClasses, { init: scaled });
}

/** The official fine-tuning key of a graph parameter: `backbone.` dropped. */
export function classifierKey(paramName: string): string {
  return paramName.startsWith("backbone.") ? paramName.slice("backbone.".length) : paramName;
}

/** The graph parameter of an official fine-tuning key (the inverse of {@link classifierKey}). */
export function classifierParamName(key: string): string {
  return key === "fc_norm.weight" || key === "fc_norm.bias" || key.startsWith("head.")
    ? key
    : `backbone.${key}`;
}

/**
 * The official `fix_init_weight` of a randomly initialised classifier: block i's `attn.proj` and
 * `mlp.fc2` weights divided by √(2·(i + 1)), in place in `values` (graph parameter names).
 */
export function fixInitWeight(
  values: { get(name: string): Float32Array },
  depth: number,
): void {
  for (let i = 0; i < depth; i++) {
    const factor = Math.sqrt(2 * (i + 1));
    for (const part of ["attn.proj", "mlp.fc2"]) {
      const weight = values.get(`backbone.blocks.${i}.${part}.weight`);
      for (let j = 0; j < weight.length; j++) weight[j] /= factor;
    }
  }
}
