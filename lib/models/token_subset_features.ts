/**
 * The linear-probed ViT (the official analysis model `VisionTransformerLinearEval`: backbone,
 * evaluation features, `linear` classifier) on a chosen subset of its patch tokens, for the
 * occlusion and shuffle analyses. Two int64 inputs of the same symbolic length K pick the tokens:
 * token j carries the embedding of patch `patch_index[j]` at the position of patch
 * `position_index[j]` (row-major patch numbers). So one graph serves every share of dropped
 * patches (both indices the kept patches, K < N, the dropped tokens removed from the sequence),
 * and a shuffled patch order (`patch_index` a permutation, `position_index` 0 … N − 1: each
 * patch's content moved to another place, as shuffling the image's patches does). With all N
 * patches in order it is the plain network of `features.ts`.
 *
 * The weights are the backbone's (`<prefix>.backbone.*`, official names) and the classifier's
 * (`<prefix>.linear.weight` [classes, dim], `<prefix>.linear.bias`). ViT only: a Swin merges
 * neighbouring patches and attends within windows of the full grid, so it has no token sequence
 * from which patches could be removed.
 *
 * @module
 */

import { symbolicDim } from "../graph/dim.ts";
import { Graph } from "../graph/graph.ts";
import { linear as linearOp } from "../graph/linalg.ts";
import { add } from "../graph/math.ts";
import { conv2dPatch, layerNorm as layerNormOp } from "../graph/nn.ts";
import { mean } from "../graph/reduce.ts";
import { concat, expand, gather, reshape, slice, transpose } from "../graph/shape.ts";
import type { Tensor } from "../graph/tensor.ts";
import { transformerBlock } from "./block.ts";
import { layerNorm, TRUNC_NORMAL_002 } from "./layers.ts";
import { positionEmbedding, type VitConfig } from "./vit.ts";

/** What the token-subset classifier computes. */
export interface TokenSubsetConfig {
  /** The ViT's architecture. */
  readonly backbone: Omit<VitConfig, "maskedImModeling">;
  /** Images per run. */
  readonly batch: number;
  /** Input side in pixels (a multiple of the patch size). */
  readonly size: number;
  /** 0: CLS tokens; 1: mean patch token; 2: both (`avgpool_patchtokens`). */
  readonly avgpool: 0 | 1 | 2;
  /** Number of last blocks whose CLS tokens are used (`n_last_blocks`). */
  readonly nLastBlocks: number;
  /** Number of classes of the linear classifier. */
  readonly classes: number;
  /** Scope of the weights, e.g. `model`. */
  readonly prefix: string;
}

/** Names of the graph's inputs and outputs. */
export const TOKEN_SUBSET_IO = {
  /** Images [batch, 3, size, size], normalised. */
  images: "images",
  /** int64 [K]: the patch whose embedding each kept token carries. */
  patchIndex: "patch_index",
  /** int64 [K]: the patch whose position embedding each kept token gets. */
  positionIndex: "position_index",
  /** Evaluation features [batch, dim]. */
  features: "features",
  /** Classifier logits [batch, classes]. */
  logits: "logits",
} as const;

/** Builds the graph; the kept-token count K is symbolic. Returns it with the feature width. */
export function buildTokenSubsetGraph(config: TokenSubsetConfig): { graph: Graph; dim: number } {
  const { backbone, batch, size } = config;
  const { embedDim: dim, depth, heads, patchSize: p } = backbone;
  const g = new Graph("ibot_token_subset");
  if (size % p !== 0) g.fail("tokenSubset", `image size ${size} is not a multiple of patch ${p}`);
  if (config.nLastBlocks < 1 || config.nLastBlocks > depth) {
    g.fail("tokenSubset", `n_last_blocks ${config.nLastBlocks} is outside [1, ${depth}]`);
  }
  const images = g.input(TOKEN_SUBSET_IO.images, "float32", [batch, 3, size, size]);
  const kept = symbolicDim("kept");
  const patchIndex = g.input(TOKEN_SUBSET_IO.patchIndex, "int64", [kept]);
  const positionIndex = g.input(TOKEN_SUBSET_IO.positionIndex, "int64", [kept]);
  const out = g.scope(config.prefix, () => {
    const blocks = g.scope("backbone", () => {
      const grid = backbone.imgSize / p;
      const clsToken = g.param("cls_token", [1, 1, dim], TRUNC_NORMAL_002);
      const posEmbed = g.param("pos_embed", [1, 1 + grid * grid, dim], TRUNC_NORMAL_002);
      const fanIn = 3 * p * p;
      const patches = g.scope("patch_embed.proj", () =>
        conv2dPatch(
          images,
          g.param("weight", [dim, 3, p, p], { kind: "torchDefault", fanIn }),
          g.param("bias", [dim], { kind: "torchDefault", fanIn }),
          p,
        ));
      const side = size / p;
      const count = side * side;
      const embedded = transpose(reshape(patches, [batch, dim, count]), [0, 2, 1]);
      const positions = positionEmbedding(posEmbed, grid, side, side);
      const clsPosition = slice(positions, [0], [1], [1]);
      const patchPositions = slice(positions, [1], [1 + count], [1]);
      const tokens = add(gather(embedded, patchIndex, 1), gather(patchPositions, positionIndex, 1));
      let x = concat([expand(add(clsToken, clsPosition), [batch, 1, dim]), tokens], 1);
      const outputs: Tensor[] = [];
      for (let i = 0; i < depth; i++) {
        x = g.scope(
          `blocks.${i}`,
          () => transformerBlock(g, x, { heads, mlpHidden: (backbone.mlpRatio ?? 4) * dim }).out,
        );
        outputs.push(x);
      }
      return outputs;
    });
    const features = evaluationFeatures(g, config, blocks);
    const logits = g.scope("linear", () => {
      const width = features.shape[1];
      const weight = g.param("weight", [config.classes, width], TRUNC_NORMAL_002);
      return linearOp(features, weight, g.param("bias", [config.classes], { kind: "zeros" }));
    });
    return { features, logits };
  });
  g.output(TOKEN_SUBSET_IO.features, out.features);
  g.output(TOKEN_SUBSET_IO.logits, out.logits);
  return { graph: g, dim: out.features.shape[1] };
}

/**
 * The features of `features.ts` from the block outputs (a symbolic token count): the final-normed
 * CLS tokens of the last n blocks, the mean of the last block's patch tokens through a plain
 * LayerNorm (avgpool 1: the official `fc_norm`, absent from pre-training checkpoints), or the CLS
 * tokens followed by the mean of the final-normed patch tokens (avgpool 2).
 */
function evaluationFeatures(g: Graph, config: TokenSubsetConfig, blocks: Tensor[]): Tensor {
  const last = blocks.at(-1)!;
  const [batch, tokens, dim] = last.dims;
  const finalNorm = (t: Tensor) => g.scope("backbone", () => layerNorm(g, "norm", t, 1e-6));
  const cls = (t: Tensor) => reshape(slice(t, [0], [1], [1]), [batch, dim]);
  const meanPatches = (t: Tensor) => mean(slice(t, [1], [tokens], [1]), [1]);
  if (config.avgpool === 1) {
    const width = config.backbone.embedDim;
    const ones = g.filled(1, "float32", [width]);
    const zeros = g.filled(0, "float32", [width]);
    return layerNormOp(meanPatches(last), ones, zeros, 1e-6);
  }
  const normed = blocks.slice(blocks.length - config.nLastBlocks).map(finalNorm);
  const parts = normed.map(cls);
  if (config.avgpool === 2) parts.push(meanPatches(normed.at(-1)!));
  return concat(parts, 1);
}
