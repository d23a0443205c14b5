/**
 * The official iBOT Vision Transformer (`models/vision_transformer.py`): conv patch embedding,
 * CLS token, learned position embedding (bicubic-interpolated for other crop sizes with the
 * official scale-factor convention), a mask token that replaces masked patch embeddings, pre-norm
 * blocks and a final LayerNorm. Parameters carry the official state-dict names under `backbone.`.
 *
 * The batch, height and width of the images may be symbolic (an inference graph for any input
 * size, e.g. the exported ONNX backbone); training graphs have static shapes.
 *
 * @module
 */

import { type Dim, formatDim, mulDims, sameDim } from "../graph/dim.ts";
import { type Graph, staticDim } from "../graph/graph.ts";
import { add, cast, div, equal, logicalAnd, mul, sub, where } from "../graph/math.ts";
import { conv2dPatch, resizeBicubic, resizeBicubicByScales } from "../graph/nn.ts";
import { concat, expand, reshape, slice, split, transpose } from "../graph/shape.ts";
import type { Tensor } from "../graph/tensor.ts";
import { dropPathScales, transformerBlock } from "./block.ts";
import { layerNorm, TRUNC_NORMAL_002 } from "./layers.ts";

/** Width, depth and heads of a ViT. */
export interface VitSize {
  /** Token width D. */
  readonly embedDim: number;
  /** Number of blocks. */
  readonly depth: number;
  /** Attention heads per block. */
  readonly heads: number;
}

/**
 * ViT sizes by architecture name: the official `vit_tiny` … `vit_large` (`deit_*` names map to
 * these), and this toolkit's `vit_mini`, small enough to pre-train on two CPU cores in minutes.
 */
export const VIT_SIZES: Readonly<Record<string, VitSize>> = {
  vit_mini: { embedDim: 96, depth: 6, heads: 3 },
  vit_tiny: { embedDim: 192, depth: 12, heads: 3 },
  vit_small: { embedDim: 384, depth: 12, heads: 6 },
  vit_base: { embedDim: 768, depth: 12, heads: 12 },
  vit_large: { embedDim: 1024, depth: 24, heads: 16 },
};

/** A ViT's architecture. */
export interface VitConfig extends VitSize {
  /** Side of a square patch in pixels. */
  readonly patchSize: number;
  /** Image size the position embedding is laid out for (224 officially): (imgSize/p)² entries. */
  readonly imgSize: number;
  /** MLP hidden width = mlpRatio · embedDim (4 officially). */
  readonly mlpRatio?: number;
  /** Whether the network has the `masked_embed` token (the student in pre-training). */
  readonly maskedImModeling: boolean;
}

/** Inputs of one forward pass. */
export interface VitInputs {
  /** Images [B, 3, H, W]; H and W multiples of the patch size. B, H and W may be symbolic. */
  readonly images: Tensor;
  /** Mask [B, (H/p)·(W/p)] of 0/1 floats, row-major; 1 replaces the patch by `masked_embed`. */
  readonly mask?: Tensor;
  /**
   * Drop-path scales [depth, 2, B] (keep mask / keep probability) for the attention (index 0)
   * and MLP (index 1) branches of each block; omit for no drop path.
   */
  readonly dropPath?: Tensor;
  /** Blocks whose drop-path rate is 0 ignore `dropPath` (no work is emitted for them). */
  readonly dropPathRates?: readonly number[];
  /** Also return the outputs of the last n blocks, each through the final norm (evaluation). */
  readonly intermediateLayers?: number;
  /**
   * False: the network has no final `norm` (the official fine-tuning model with mean pooling,
   * whose `fc_norm` follows the pooling); `tokens` and `intermediate` are then the blocks' outputs
   * as they are. Default true.
   */
  readonly finalNorm?: boolean;
}

/** Outputs of one forward pass. */
export interface VitOutputs {
  /** All tokens after the final norm: [B, 1 + N, D], CLS first. */
  readonly tokens: Tensor;
  /** The last block's attention probabilities [B, heads, 1 + N, 1 + N]. */
  readonly lastAttention: Tensor;
  /** The last block's output before the final norm, [B, 1 + N, D]. */
  readonly lastBlock: Tensor;
  /** The last `intermediateLayers` block outputs, each through the final norm, [B, 1 + N, D]. */
  readonly intermediate: Tensor[];
}

/** The stochastic-depth rate of each block: linspace(0, rate, depth). */
export function dropPathRates(rate: number, depth: number): number[] {
  return Array.from({ length: depth }, (_, i) => (depth === 1 ? 0 : (rate * i) / (depth - 1)));
}

/**
 * Adds a ViT forward pass under scope `backbone` of the current scope. Calling it again in the
 * same scope reuses the same parameters (e.g. global and local crops through one student).
 */
export function vit(g: Graph, config: VitConfig, inputs: VitInputs): VitOutputs {
  const { embedDim: dim, depth, heads, patchSize: p } = config;
  const batch = inputs.images.dims[0];
  const channels = staticDim("vit", inputs.images, 1);
  const grid = config.imgSize / p;
  if (!Number.isInteger(grid)) {
    g.fail("vit", `image size ${config.imgSize} is not a multiple of patch ${p}`);
  }
  return g.scope("backbone", () => {
    // Direct parameters first, in the official registration order.
    const clsToken = g.param("cls_token", [1, 1, dim], TRUNC_NORMAL_002);
    const posEmbed = g.param("pos_embed", [1, 1 + grid * grid, dim], TRUNC_NORMAL_002);
    const maskedEmbed = config.maskedImModeling
      ? g.param("masked_embed", [1, dim], { kind: "zeros" })
      : undefined;
    const fanIn = channels * p * p;
    const patches = g.scope("patch_embed.proj", () =>
      conv2dPatch(
        inputs.images,
        g.param("weight", [dim, channels, p, p], { kind: "torchDefault", fanIn }),
        g.param("bias", [dim], { kind: "torchDefault", fanIn }),
        p,
      ));
    const [h, w] = patches.dims.slice(2);
    const count = mulDims(h, w);
    let tokens = transpose(reshape(patches, [batch, dim, count]), [0, 2, 1]);
    if (inputs.mask) {
      if (!maskedEmbed) g.fail("vit", "a mask was given to a network without masked_embed");
      if (!sameDim(inputs.mask.dims[0], batch) || !sameDim(inputs.mask.dims[1], count)) {
        g.fail("vit", `mask ${inputs.mask} must be [${formatDim(batch)}, ${formatDim(count)}]`);
      }
      const m = reshape(inputs.mask, [batch, count, 1]);
      tokens = add(mul(tokens, sub(1, m)), mul(m, reshape(maskedEmbed, [1, 1, dim])));
    }
    tokens = concat([expand(clsToken, [batch, 1, dim]), tokens], 1);
    let x = add(tokens, positionEmbedding(posEmbed, grid, h, w));

    const mlpHidden = (config.mlpRatio ?? 4) * dim;
    const rates = inputs.dropPathRates ?? [];
    const outputs: Tensor[] = [];
    let lastAttention: Tensor | undefined;
    for (let i = 0; i < depth; i++) {
      const scales = dropPathScales(inputs.dropPath, rates, i, batch);
      const block = g.scope(
        `blocks.${i}`,
        () => transformerBlock(g, x, { heads, mlpHidden }, scales),
      );
      x = block.out;
      lastAttention = block.attention;
      outputs.push(x);
    }
    const finalNorm = inputs.finalNorm === false
      ? (t: Tensor) => t
      : (t: Tensor) => layerNorm(g, "norm", t, 1e-6);
    const n = inputs.intermediateLayers ?? 0;
    return {
      tokens: finalNorm(x),
      lastAttention: lastAttention!,
      lastBlock: x,
      intermediate: outputs.slice(depth - n).map(finalNorm),
    };
  });
}

/**
 * The position embedding for an h×w patch grid: the stored table when it already has that size,
 * otherwise its patch part resized bicubically with scale ((h + 0.1)/grid, (w + 0.1)/grid), as
 * the official `interpolate_pos_encoding`. Returns [1, 1 + h·w, D].
 *
 * With a symbolic h or w the choice and the scales are made at run time, from the grid's size.
 */
export function positionEmbedding(posEmbed: Tensor, grid: number, h: Dim, w: Dim): Tensor {
  if (h === grid && w === grid) return posEmbed;
  const dim = posEmbed.shape[2];
  const clsPos = slice(posEmbed, [0], [1], [1]);
  const patchPos = slice(posEmbed, [1], [1 + grid * grid], [1]);
  if (typeof h !== "number" || typeof w !== "number") {
    return concat([clsPos, resizePatchPositions(patchPos, grid, h, w)], 1);
  }
  const table = transpose(reshape(patchPos, [grid, grid, dim]), [2, 0, 1]);
  const resized = resizeBicubic(table, (h + 0.1) / grid, (w + 0.1) / grid);
  if (resized.shape[1] !== h || resized.shape[2] !== w) {
    posEmbed.graph.fail("positionEmbedding", `interpolation gave ${resized} for a ${h}×${w} grid`);
  }
  return concat([clsPos, reshape(transpose(resized, [1, 2, 0]), [1, h * w, dim])], 1);
}

/**
 * The patch positions [1, grid², D] for an h×w grid known at run time: unchanged (scale 1) when
 * h = w = grid, else resized with scales ((h + 0.1)/grid, (w + 0.1)/grid). Returns [1, h·w, D].
 */
function resizePatchPositions(patchPos: Tensor, grid: number, h: Dim, w: Dim): Tensor {
  const g = patchPos.graph;
  const dim = patchPos.shape[2];
  const table = transpose(reshape(patchPos, [1, grid, grid, dim]), [0, 3, 1, 2]);
  const size = concat([g.dimValue(h), g.dimValue(w)], 0);
  const [sameH, sameW] = split(equal(size, g.int64s([grid, grid])), [1, 1], 0);
  const scales = where(logicalAnd(sameH, sameW), 1, div(add(cast(size, "float32"), 0.1), grid));
  const resized = resizeBicubicByScales(table, scales, h, w);
  return transpose(reshape(resized, [1, dim, mulDims(h, w)]), [0, 2, 1]);
}
