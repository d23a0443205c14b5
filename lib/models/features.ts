/**
 * The evaluation artifact: a frozen backbone that turns a batch of images into one feature row per
 * image, as the official k-NN and linear evaluations do (§6.1): the final-normed CLS token of the
 * last `n` blocks (`avgpool` 0), the mean patch token of the last block (1), or both (2). For a
 * Swin only the first is available: its "CLS" of each of the last n blocks counted across stages
 * is the average of the block's tokens, final-normed in the last stage and raw before (the
 * official `get_intermediate_layers`), so the width is the sum of those blocks' widths.
 *
 * @module
 */

import { Graph } from "../graph/graph.ts";
import { layerNorm as layerNormOp } from "../graph/nn.ts";
import { mean } from "../graph/reduce.ts";
import { concat, reshape, slice } from "../graph/shape.ts";
import type { Tensor } from "../graph/tensor.ts";
import { vit } from "./vit.ts";
import { swin } from "./swin.ts";
import { type BackboneConfig, isSwin } from "./backbone.ts";

/** What the feature graph computes. */
export interface FeatureConfig {
  /** The backbone's architecture. */
  readonly backbone: BackboneConfig;
  /** Images per run. */
  readonly batch: number;
  /** Input side in pixels (a multiple of the patch size). */
  readonly size: number;
  /** 0: CLS tokens; 1: mean patch token; 2: both (`avgpool_patchtokens`). */
  readonly avgpool: 0 | 1 | 2;
  /** Number of last blocks whose CLS tokens are used (`n_last_blocks`). */
  readonly nLastBlocks: number;
  /** Scope of the backbone's parameters in the state, e.g. `teacher` or `student`. */
  readonly prefix: string;
}

/** Name of the feature graph's image input [B, 3, S, S] and feature output [B, dim]. */
export const FEATURE_IO = { images: "images", features: "features" } as const;

/** Builds the feature graph; its parameters are `<prefix>.backbone.*`. */
export function buildFeatureGraph(config: FeatureConfig): { graph: Graph; dim: number } {
  const g = new Graph("ibot_features");
  const images = g.input(FEATURE_IO.images, "float32", [config.batch, 3, config.size, config.size]);
  const backbone = config.backbone;
  if (isSwin(backbone) && config.avgpool !== 0) {
    throw new Error(
      `Swin features are average-pooled block tokens (avgpool_patchtokens 0), not avgpool ${config.avgpool}`,
    );
  }
  const features = g.scope(config.prefix, () => {
    if (isSwin(backbone)) {
      const out = swin(g, { ...backbone, maskedImModeling: false }, {
        images,
        intermediateLayers: config.nLastBlocks,
      });
      return concat(out.intermediate.map((tokens) => mean(tokens, [1])), 1);
    }
    const out = vit(g, { ...backbone, maskedImModeling: false }, {
      images,
      intermediateLayers: config.avgpool === 1 ? 0 : config.nLastBlocks,
    });
    const parts: Tensor[] = [];
    if (config.avgpool !== 1) {
      for (const layer of out.intermediate) parts.push(clsToken(layer));
    }
    if (config.avgpool === 1) parts.push(meanPooled(out.lastBlock));
    if (config.avgpool === 2) parts.push(meanPatches(out.intermediate.at(-1)!));
    return concat(parts, 1);
  });
  g.output(FEATURE_IO.features, features);
  return { graph: g, dim: features.shape[1] };
}

function clsToken(tokens: Tensor): Tensor {
  return reshape(slice(tokens, [0], [1], [1]), [tokens.shape[0], tokens.shape[2]]);
}

function meanPatches(tokens: Tensor): Tensor {
  return mean(slice(tokens, [1], [tokens.shape[1]], [1]), [1]);
}

/**
 * `avgpool` 1: the official model then replaces the final norm by Identity and puts the mean of
 * the last block's patch tokens through `fc_norm`, which a pre-training checkpoint does not hold,
 * so it keeps its initial identity affine: a plain LayerNorm (eps 1e-6).
 */
function meanPooled(lastBlock: Tensor): Tensor {
  const g = lastBlock.graph;
  const dim = lastBlock.shape[2];
  const pooled = meanPatches(lastBlock);
  const ones = g.filled(1, "float32", [dim]);
  const zeros = g.filled(0, "float32", [dim]);
  return layerNormOp(pooled, ones, zeros, 1e-6);
}
