/**
 * The pre-norm transformer block of the official ViT (`models/vision_transformer.py: Block`):
 * x + Attn(LN1(x)), then x + MLP(LN2(x)), with exact GELU and LayerNorm eps 1e-6, and optional
 * per-sample drop-path scales fed as inputs.
 *
 * @module
 */

import { type Dim, mulDims } from "../graph/dim.ts";
import { type Graph, staticDim } from "../graph/graph.ts";
import { matmul } from "../graph/linalg.ts";
import { add, mul } from "../graph/math.ts";
import { gelu, softmax } from "../graph/nn.ts";
import { reshape, slice, split, transpose } from "../graph/shape.ts";
import type { Tensor } from "../graph/tensor.ts";
import { layerNorm, linear } from "./layers.ts";

/** Shape of a block. */
export interface BlockConfig {
  /** Number of attention heads; the width must be a multiple of it. */
  readonly heads: number;
  /** Hidden width of the MLP (4 × width in the official models). */
  readonly mlpHidden: number;
  /** LayerNorm epsilon (1e-6 in the official models). */
  readonly eps?: number;
  /** Whether `qkv` has a bias (true in the official models). */
  readonly qkvBias?: boolean;
}

/**
 * Per-sample drop-path scales, each [B] (keep mask divided by the keep probability), drawn on the
 * host and fed in; omitted branches are kept as is.
 */
export interface DropPathScales {
  /** Scales [B] of the attention branch. */
  readonly attn?: Tensor;
  /** Scales [B] of the MLP branch. */
  readonly mlp?: Tensor;
}

/**
 * The drop-path scales of block `index` from the fed table [blocks, 2, B] (attention branch at 0,
 * MLP branch at 1); none when no table is given or the block's rate in `rates` is 0, so that no
 * work is emitted for it.
 */
export function dropPathScales(
  table: Tensor | undefined,
  rates: readonly number[],
  index: number,
  batch: Dim,
): DropPathScales {
  if (!table || !((rates[index] ?? 0) > 0)) return {};
  const branch = (j: number) =>
    reshape(slice(table, [index, j], [index + 1, j + 1], [0, 1]), [batch]);
  return { attn: branch(0), mlp: branch(1) };
}

/** Output of {@link attention}: the projected tokens and the attention probabilities. */
export interface AttentionResult {
  /** [B, N, D]. */
  readonly out: Tensor;
  /** Softmax attention [B, heads, N, N]. */
  readonly probabilities: Tensor;
}

/**
 * Multi-head self-attention named `<scope>.attn`: `qkv` Linear(D → 3D) laid out [q | k | v], each
 * head-major; softmax(q·kᵀ/√hd)·v; heads concatenated; `proj` Linear(D → D). x [B, N, D];
 * B and N may be symbolic.
 */
export function attention(g: Graph, x: Tensor, heads: number, qkvBias = true): AttentionResult {
  const [batch, tokens] = x.dims;
  const dim = staticDim("attention", x, 2);
  if (dim % heads !== 0) g.fail("attention", `width ${dim} is not a multiple of ${heads} heads`);
  const headDim = dim / heads;
  const rows = mulDims(batch, tokens);
  return g.scope("attn", () => {
    const qkv = linear(g, "qkv", reshape(x, [rows, dim]), 3 * dim, { bias: qkvBias });
    const perHead = transpose(reshape(qkv, [batch, tokens, 3, heads, headDim]), [2, 0, 3, 1, 4]);
    const [q, k, v] = split(perHead, [1, 1, 1], 0).map((t) =>
      reshape(t, [batch, heads, tokens, headDim])
    );
    const probabilities = softmax(matmul(q, k, { transB: true, alpha: headDim ** -0.5 }));
    const mixed = transpose(matmul(probabilities, v), [0, 2, 1, 3]);
    const out = linear(g, "proj", reshape(mixed, [rows, dim]), dim);
    return { out: reshape(out, [batch, tokens, dim]), probabilities };
  });
}

/** The MLP named `<scope>.mlp`: fc1 (D → hidden), exact GELU, fc2 (hidden → D). */
export function mlp(g: Graph, x: Tensor, hidden: number): Tensor {
  const dim = staticDim("mlp", x, -1);
  return g.scope("mlp", () => linear(g, "fc2", gelu(linear(g, "fc1", x, hidden)), dim));
}

/**
 * One pre-norm block under the current scope (parameters `norm1.*`, `attn.qkv.*`, `attn.proj.*`,
 * `norm2.*`, `mlp.fc1.*`, `mlp.fc2.*`). x [B, N, D] → [B, N, D] (B and N may be symbolic);
 * also returns the attention.
 */
export function transformerBlock(
  g: Graph,
  x: Tensor,
  config: BlockConfig,
  dropPath: DropPathScales = {},
): { out: Tensor; attention: Tensor } {
  const eps = config.eps ?? 1e-6;
  const [batch, tokens, dim] = x.dims;
  const attn = attention(g, layerNorm(g, "norm1", x, eps), config.heads, config.qkvBias ?? true);
  const h = add(x, scaleSamples(attn.out, dropPath.attn));
  const flat = reshape(h, [mulDims(batch, tokens), dim]);
  const m = reshape(mlp(g, layerNorm(g, "norm2", flat, eps), config.mlpHidden), [
    batch,
    tokens,
    dim,
  ]);
  return { out: add(h, scaleSamples(m, dropPath.mlp)), attention: attn.probabilities };
}

/** Drop-path scaling of a residual branch x [B, N, D] by per-sample scales [B]; x when omitted. */
export function scaleSamples(x: Tensor, scale?: Tensor): Tensor {
  return scale ? mul(x, reshape(scale, [x.dims[0], 1, 1])) : x;
}
