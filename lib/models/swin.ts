/**
 * The official iBOT Swin Transformer (`models/swin_transformer.py`): a 4×4 conv patch embedding
 * with LayerNorm, a mask token that replaces masked patch embeddings (the mask comes at the
 * last stage's grid and is repeated onto the first), four stages of shifted-window blocks joined
 * by patch merging, and a final LayerNorm whose tokens are average-pooled into the token the head
 * uses as CLS. Parameters carry the official state-dict names under `backbone.`; the buffers
 * `relative_position_index` are graph constants, not parameters (`relativePositionIndex` of
 * window_attention.ts gives their values, {@link swinStages} each block's window).
 *
 * The batch may be symbolic (an exported backbone); image and grid sizes are fixed.
 *
 * @module
 */

import { isSymbolic } from "../graph/dim.ts";
import { type Graph, staticDim } from "../graph/graph.ts";
import { linear as linearOp } from "../graph/linalg.ts";
import { add, mul, sub } from "../graph/math.ts";
import { conv2dPatch } from "../graph/nn.ts";
import { mean } from "../graph/reduce.ts";
import { permuteAxis } from "../graph/permute.ts";
import { concat, expand, reshape, transpose } from "../graph/shape.ts";
import { sameShape, type Tensor } from "../graph/tensor.ts";
import { type DropPathScales, dropPathScales, mlp, scaleSamples } from "./block.ts";
import { layerNorm, TRUNC_NORMAL_002 } from "./layers.ts";
import { dropPathRates } from "./vit.ts";
import { shiftedWindowAttention, type WindowLayout } from "./window_attention.ts";

/** Side of the square patches of the official Swin (`patch_size` 4, never overridden). */
export const SWIN_PATCH_SIZE = 4;

/** LayerNorm epsilon of every Swin norm. */
const EPS = 1e-6;

/** Widths, depths and heads of a Swin, and its factory's default stochastic-depth rate. */
export interface SwinSize {
  /** Token width C of the first stage; stage s has C·2^s. */
  readonly embedDim: number;
  /** Blocks per stage. */
  readonly depths: readonly number[];
  /** Attention heads per stage (one entry per stage). */
  readonly heads: readonly number[];
  /** The factory's drop-path rate (the student's, whatever `--drop_path` says). */
  readonly dropPathRate: number;
}

/**
 * Swin sizes by architecture name: the official `swin_tiny` … `swin_large`, and this toolkit's
 * `swin_mini`, small enough for tests and CPU runs (head width 32 as in the official sizes).
 */
export const SWIN_SIZES: Readonly<
  Record<"swin_mini" | "swin_tiny" | "swin_small" | "swin_base" | "swin_large", SwinSize>
> = {
  swin_mini: { embedDim: 32, depths: [1, 1, 2, 1], heads: [1, 2, 4, 8], dropPathRate: 0.1 },
  swin_tiny: { embedDim: 96, depths: [2, 2, 6, 2], heads: [3, 6, 12, 24], dropPathRate: 0.1 },
  swin_small: { embedDim: 96, depths: [2, 2, 18, 2], heads: [3, 6, 12, 24], dropPathRate: 0.2 },
  swin_base: { embedDim: 128, depths: [2, 2, 18, 2], heads: [4, 8, 16, 32], dropPathRate: 0.2 },
  swin_large: { embedDim: 192, depths: [2, 2, 18, 2], heads: [6, 12, 24, 48], dropPathRate: 0.2 },
};

/** A Swin's architecture. */
export interface SwinConfig extends SwinSize {
  /** Window side in tokens (`--window_size`, 7 or 14 in the recipes). */
  readonly windowSize: number;
  /**
   * Image size the blocks are laid out for (224 officially): it fixes each stage's resolution,
   * hence each block's effective window and shift, whatever size the images have at run time.
   */
  readonly imgSize: number;
  /** Whether the network has the `masked_embed` token (the student in pre-training). */
  readonly maskedImModeling: boolean;
  /** MLP hidden width = mlpRatio · width (4 officially). */
  readonly mlpRatio?: number;
}

/** One stage as the official constructor lays it out. */
export interface SwinStage {
  /** Token width of the stage. */
  readonly dim: number;
  /** Attention heads. */
  readonly heads: number;
  /** Resolution of the stage's grid at `imgSize` (56, 28, 14, 7 for 224). */
  readonly resolution: number;
  /** Effective window and shift of each block (window also sizes its bias table and index). */
  readonly blocks: readonly WindowLayout[];
}

/** Inputs of one forward pass. */
export interface SwinInputs {
  /** Images [B, 3, H, W], H and W multiples of 4. */
  readonly images: Tensor;
  /**
   * Mask [B, h·w] of 0/1 floats at the last stage's grid (h = H/32, w = W/32), row-major; each
   * entry replaces an 8×8 block of patch embeddings by `masked_embed`.
   */
  readonly mask?: Tensor;
  /**
   * Drop-path scales [Σ depths, 2, B] (keep mask / keep probability) for the attention (index 0)
   * and MLP (index 1) branches of each block, blocks counted across stages; omit for none.
   */
  readonly dropPath?: Tensor;
  /** Blocks whose drop-path rate is 0 ignore `dropPath` (no work is emitted for them). */
  readonly dropPathRates?: readonly number[];
  /**
   * Also return the outputs of the last n blocks, counted across stages (evaluation, the official
   * `get_intermediate_layers`).
   */
  readonly intermediateLayers?: number;
}

/** Outputs of one forward pass. */
export interface SwinOutputs {
  /**
   * [B, 1 + L, D]: the average of the final-normed last-stage tokens first (the CLS of the head),
   * then those L tokens (D = C·2^(stages − 1)).
   */
  readonly tokens: Tensor;
  /**
   * The outputs of the last `intermediateLayers` blocks in forward order, each [B, h·w, C] of
   * its stage: those of the last stage through the final norm, earlier ones raw (before patch
   * merging).
   */
  readonly intermediate: Tensor[];
}

/** The stochastic-depth rate of each block across stages: linspace(0, rate, Σ depths). */
export function swinDropPathRates(config: SwinSize): number[] {
  return dropPathRates(config.dropPathRate, config.depths.reduce((a, b) => a + b, 0));
}

/**
 * The stages as the official constructor builds them from `imgSize`: stage s has resolution
 * ⌊imgSize/4⌋/2^s; where that is at most the window, its blocks use window = resolution and no
 * shift, else the window with shifts alternating 0 and ⌊window/2⌋.
 */
export function swinStages(config: SwinConfig): SwinStage[] {
  const { embedDim, depths, heads, windowSize, imgSize } = config;
  if (depths.length === 0 || depths.length !== heads.length) {
    throw new Error(`swin: depths [${depths}] and heads [${heads}] must be one entry per stage`);
  }
  if (!Number.isInteger(windowSize) || windowSize < 1) {
    throw new Error(`swin: the window size ${windowSize} must be a positive integer`);
  }
  const grid = Math.floor(imgSize / SWIN_PATCH_SIZE);
  return depths.map((depth, s) => {
    const dim = embedDim * 2 ** s;
    if (dim % heads[s] !== 0) {
      throw new Error(`swin: stage ${s} width ${dim} is not a multiple of ${heads[s]} heads`);
    }
    const resolution = Math.floor(grid / 2 ** s);
    if (resolution < 1) throw new Error(`swin: image size ${imgSize} leaves stage ${s} empty`);
    const blocks = Array.from(
      { length: depth },
      (_, b) =>
        resolution <= windowSize
          ? { window: resolution, shift: 0 }
          : { window: windowSize, shift: b % 2 === 0 ? 0 : Math.floor(windowSize / 2) },
    );
    return { dim, heads: heads[s], resolution, blocks };
  });
}

/**
 * Adds a Swin forward pass under scope `backbone` of the current scope. Calling it again in the
 * same scope reuses the same parameters (e.g. global and local crops through one student).
 */
export function swin(g: Graph, config: SwinConfig, inputs: SwinInputs): SwinOutputs {
  const stages = swinStages(config);
  const { images } = inputs;
  if (images.rank !== 4 || images.dims.slice(1).some(isSymbolic)) {
    g.fail("swin", `images ${images} must be [B, C, H, W] with fixed C, H and W`);
  }
  const batch = images.dims[0];
  const channels = staticDim("swin", images, 1);
  const dim = config.embedDim;
  const mlpRatio = config.mlpRatio ?? 4;
  const rates = inputs.dropPathRates ?? [];
  const blocks = config.depths.reduce((a, b) => a + b, 0);
  if (inputs.dropPath && !sameShape(inputs.dropPath.dims, [blocks, 2, batch])) {
    g.fail("swin", `drop-path scales ${inputs.dropPath} must be [${blocks}, 2, ${batch}]`);
  }
  return g.scope("backbone", () => {
    const maskedEmbed = config.maskedImModeling
      ? g.param("masked_embed", [1, dim], { kind: "zeros" })
      : undefined;
    const fanIn = channels * SWIN_PATCH_SIZE ** 2;
    const patches = g.scope("patch_embed.proj", () =>
      conv2dPatch(
        images,
        g.param("weight", [dim, channels, SWIN_PATCH_SIZE, SWIN_PATCH_SIZE], {
          kind: "torchDefault",
          fanIn,
        }),
        g.param("bias", [dim], { kind: "torchDefault", fanIn }),
        SWIN_PATCH_SIZE,
      ));
    let [h, w] = [staticDim("swin", patches, 2), staticDim("swin", patches, 3)];
    const flat = transpose(reshape(patches, [batch, dim, h * w]), [0, 2, 1]);
    let x = layerNorm(g, "patch_embed.norm", flat, EPS);
    if (inputs.mask) {
      if (!maskedEmbed) g.fail("swin", "a mask was given to a network without masked_embed");
      x = applyMask(x, inputs.mask, maskedEmbed, h, w, 2 ** (stages.length - 1));
    }

    let block = 0;
    const outputs: { tokens: Tensor; last: boolean }[] = [];
    for (const [s, stage] of stages.entries()) {
      const mlpHidden = Math.floor(stage.dim * mlpRatio);
      for (const [b, layout] of stage.blocks.entries()) {
        const scales = dropPathScales(inputs.dropPath, rates, block, batch);
        const input = x;
        x = g.scope(
          `layers.${s}.blocks.${b}`,
          () => swinBlock(g, input, [h, w], stage.heads, layout, mlpHidden, scales),
        );
        outputs.push({ tokens: x, last: s === stages.length - 1 });
        block++;
      }
      if (s < stages.length - 1) {
        const input = x;
        x = g.scope(`layers.${s}.downsample`, () => patchMerging(g, input, [h, w]));
        [h, w] = [Math.ceil(h / 2), Math.ceil(w / 2)];
      }
    }
    const finalNorm = (t: Tensor) => layerNorm(g, "norm", t, EPS);
    const normed = finalNorm(x);
    const n = inputs.intermediateLayers ?? 0;
    return {
      tokens: concat([mean(normed, [1], true), normed], 1),
      intermediate: outputs.slice(blocks - n).map((o) => o.last ? finalNorm(o.tokens) : o.tokens),
    };
  });
}

/**
 * Replaces the patch embeddings x [B, h·w, C] under the mask [B, (h/f)·(w/f)] (repeated f×f
 * onto the h×w grid) by `masked_embed` [1, C].
 */
function applyMask(
  x: Tensor,
  mask: Tensor,
  maskedEmbed: Tensor,
  h: number,
  w: number,
  factor: number,
): Tensor {
  const g = x.graph;
  const [batch, , dim] = x.shape;
  const [rows, columns] = [h / factor, w / factor];
  if (!Number.isInteger(rows) || !Number.isInteger(columns)) {
    g.fail("swin", `a ${h}×${w} patch grid cannot be masked at a ${factor}× coarser grid`);
  }
  if (
    mask.isSymbolic || mask.rank !== 2 || mask.shape[0] !== batch ||
    mask.shape[1] !== rows * columns
  ) {
    g.fail("swin", `mask ${mask} must be [${batch}, ${rows * columns}]`);
  }
  const cells = reshape(mask, [batch, rows, 1, columns, 1]);
  const m = reshape(expand(cells, [batch, rows, factor, columns, factor]), [batch, h * w, 1]);
  return add(mul(x, sub(1, m)), mul(m, reshape(maskedEmbed, [1, 1, dim])));
}

/**
 * One Swin block under the current scope (`norm1`, `attn.*`, `norm2`, `mlp.*`): x [B, h·w, C]
 * (`grid` = [h, w]) → x + W-MSA(LN1(x)), then + MLP(LN2(·)), each branch scaled by its drop-path
 * scales.
 */
function swinBlock(
  g: Graph,
  x: Tensor,
  grid: readonly number[],
  heads: number,
  layout: WindowLayout,
  mlpHidden: number,
  scales: DropPathScales,
): Tensor {
  const attended = shiftedWindowAttention(g, layerNorm(g, "norm1", x, EPS), grid, heads, layout);
  const y = add(x, scaleSamples(attended, scales.attn));
  return add(y, scaleSamples(mlp(g, layerNorm(g, "norm2", y, EPS), mlpHidden), scales.mlp));
}

/**
 * Patch merging under the current scope (`reduction.weight`, then `norm.*`, the official order):
 * x [B, h·w, C], zero-padded to even sides, → the 2×2 neighbourhoods concatenated as (even row,
 * even col), (odd, even), (even, odd), (odd, odd) → LayerNorm(4C) → Linear(4C → 2C, no bias):
 * [B, ⌈h/2⌉·⌈w/2⌉, 2C].
 */
function patchMerging(g: Graph, x: Tensor, [h, w]: readonly number[]): Tensor {
  const batch = x.dims[0];
  const dim = staticDim("patchMerging", x, 2);
  const reduction = g.scope(
    "reduction",
    () => g.param("weight", [2 * dim, 4 * dim], TRUNC_NORMAL_002),
  );
  const [rows, columns] = [Math.ceil(h / 2), Math.ceil(w / 2)];
  const merged = reshape(permuteAxis(x, mergeIndex(h, w), 1), [batch, rows * columns, 4 * dim]);
  return linearOp(layerNorm(g, "norm", merged, EPS), reduction);
}

/**
 * The tokens patch merging concatenates, in order: for each cell of the ⌈h/2⌉×⌈w/2⌉ grid
 * (row-major), the row-major indices of its (even row, even col), (odd, even), (even, odd) and
 * (odd, odd) tokens of the h×w grid, −1 where the zero padding of an odd side lies.
 */
function mergeIndex(h: number, w: number): number[] {
  const index: number[] = [];
  for (let r = 0; r < h; r += 2) {
    for (let c = 0; c < w; c += 2) {
      for (const [dr, dc] of [[0, 0], [1, 0], [0, 1], [1, 1]]) {
        index.push(r + dr < h && c + dc < w ? (r + dr) * w + c + dc : -1);
      }
    }
  }
  return index;
}
