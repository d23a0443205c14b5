/**
 * The shifted-window multi-head self-attention of the official Swin Transformer
 * (`models/swin_transformer.py`: `WindowAttention` and the attention half of
 * `SwinTransformerBlock`): the token grid is zero-padded right and bottom to a multiple of the
 * window, cyclically shifted, cut into non-overlapping windows, and each window attends within
 * itself with a learned relative position bias and, when shifted, a mask that keeps regions that
 * were not neighbours apart; then everything is undone in reverse order. Padding, shift and
 * partition are computed as one constant gather of the token axis ({@link windowTokenIndex}), and
 * the way back as its inverse.
 *
 * The batch may be symbolic; grid sizes are fixed.
 *
 * @module
 */

import { type Graph, staticDim } from "../graph/graph.ts";
import { linear as linearOp, matmul } from "../graph/linalg.ts";
import { add } from "../graph/math.ts";
import { softmax } from "../graph/nn.ts";
import { maskedSoftmax } from "../graph/masked_softmax.ts";
import { permuteAxis, permuteAxisParts } from "../graph/permute.ts";
import { gather, reshape, transpose } from "../graph/shape.ts";
import type { Tensor } from "../graph/tensor.ts";
import { linear, TRUNC_NORMAL_002 } from "./layers.ts";

/** The logit the official code adds between tokens of different regions of a shifted window. */
export const SHIFT_MASK_VALUE = -100;

/** Window side and cyclic shift of one block. */
export interface WindowLayout {
  /** Side of the square window in tokens. */
  readonly window: number;
  /** Cyclic shift in tokens, 0 ≤ shift < window (0: plain windows). */
  readonly shift: number;
}

/**
 * The official `relative_position_index` of a ws×ws window: for tokens i and j (row-major inside
 * the window), (Δrow + ws − 1)·(2ws − 1) + (Δcol + ws − 1) with Δ = position of i − position of j.
 * Returns ws⁴ entries, [ws², ws²] row-major, each in [0, (2ws − 1)²).
 */
export function relativePositionIndex(window: number): number[] {
  const n = window * window;
  const index = new Array<number>(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const dRow = Math.floor(i / window) - Math.floor(j / window);
      const dCol = (i % window) - (j % window);
      index[i * n + j] = (dRow + window - 1) * (2 * window - 1) + (dCol + window - 1);
    }
  }
  return index;
}

/**
 * The official shifted-window attention mask on a padded hp×wp grid (both multiples of the
 * window): each axis is cut into [0, −window), [−window, −shift) and [−shift, end), giving up to
 * nine regions; within each window (window-major, row-major windows; tokens row-major inside),
 * entry [w, i, j] is 0 when tokens i and j lie in the same region and −100 otherwise.
 * Returns [hp·wp/window², window², window²] row-major.
 */
export function shiftedWindowMask(hp: number, wp: number, layout: WindowLayout): Float32Array {
  const { window, shift } = layout;
  if (hp % window !== 0 || wp % window !== 0) {
    throw new Error(
      `shiftedWindowMask: the grid ${hp}×${wp} is not a multiple of the window ${window}`,
    );
  }
  const band = (p: number, size: number) => p < size - window ? 0 : p < size - shift ? 1 : 2;
  const [rows, columns, n] = [hp / window, wp / window, window * window];
  const mask = new Float32Array(rows * columns * n * n);
  for (let wr = 0; wr < rows; wr++) {
    for (let wc = 0; wc < columns; wc++) {
      const region = Array.from(
        { length: n },
        (_, t) =>
          3 * band(wr * window + Math.floor(t / window), hp) + band(wc * window + (t % window), wp),
      );
      const base = (wr * columns + wc) * n * n;
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < n; j++) {
          mask[base + i * n + j] = region[i] === region[j] ? 0 : SHIFT_MASK_VALUE;
        }
      }
    }
  }
  return mask;
}

/**
 * Where each token of a block's windows comes from: for the h×w grid zero-padded right and bottom
 * to hp×wp (multiples of the window) and cyclically shifted up and left by the shift, entry p of
 * the windows (window-major, windows and their tokens row-major) is the row-major grid index of
 * its token, or −1 for padding. Returns hp·wp entries; each grid token appears exactly once.
 */
export function windowTokenIndex(h: number, w: number, layout: WindowLayout): number[] {
  const { window, shift } = layout;
  const [hp, wp] = [Math.ceil(h / window) * window, Math.ceil(w / window) * window];
  const columns = wp / window;
  const index = new Array<number>(hp * wp);
  for (let p = 0; p < hp * wp; p++) {
    const [cell, t] = [Math.floor(p / (window * window)), p % (window * window)];
    const row = (Math.floor(cell / columns) * window + Math.floor(t / window) + shift) % hp;
    const column = ((cell % columns) * window + (t % window) + shift) % wp;
    index[p] = row < h && column < w ? row * w + column : -1;
  }
  return index;
}

/**
 * The attention half of one Swin block, named `attn.*` under the current scope: normed tokens
 * x [B, h·w, C] (row-major grid; B may be symbolic) → [B, h·w, C], with parameters
 * `attn.relative_position_bias_table` [(2ws − 1)², heads] (trunc normal 0.02), `attn.qkv`
 * (C → 3C, [q | k | v] head-major) and `attn.proj` (C → C). Computes what the official block
 * computes (zero-pad right and bottom to multiples of the window, cyclic shift, windows, attention,
 * and back; padded tokens take part as keys and values), with the projections on the grid's tokens
 * only: padding, shift, partition and the split into heads are one constant gather of the
 * projected tokens (a padded token's q, k and v are the qkv bias, the projection of zeros), and
 * the merge of the heads, the way back and the crop one more. Pairs of tokens the shift mask
 * separates get weight exactly 0 (the official code's weights for them are below float32
 * resolution).
 */
export function shiftedWindowAttention(
  g: Graph,
  x: Tensor,
  [h, w]: readonly number[],
  heads: number,
  layout: WindowLayout,
): Tensor {
  const { window, shift } = layout;
  if (!(Number.isInteger(window) && window > 0 && Number.isInteger(shift))) {
    g.fail("shiftedWindowAttention", `window ${window} and shift ${shift} must be integers`);
  }
  if (shift < 0 || shift >= window) {
    g.fail("shiftedWindowAttention", `shift ${shift} must lie in [0, ${window})`);
  }
  const [batch, tokens] = x.dims;
  const dim = staticDim("shiftedWindowAttention", x, 2);
  if (tokens !== h * w) g.fail("shiftedWindowAttention", `${x} is not a ${h}×${w} grid`);
  if (dim % heads !== 0) {
    g.fail("shiftedWindowAttention", `width ${dim} is not a multiple of ${heads} heads`);
  }
  const [hp, wp] = [Math.ceil(h / window) * window, Math.ceil(w / window) * window];
  const [n, headDim] = [window * window, dim / heads];
  const count = (hp * wp) / n;
  const index = windowTokenIndex(h, w, layout);
  // From the projection's [grid token, q|k|v, head] rows to the attention's [q|k|v, window, head,
  // window token] rows, padding from the bias's [q|k|v, head] rows; and back from the
  // attention's [window, head, window token] rows to [grid token, head] rows.
  const headsIn = new Array<number>(3 * count * heads * n);
  const headsBack = new Array<number>(h * w * heads);
  index.forEach((token, p) => {
    const [cell, t] = [Math.floor(p / n), p % n];
    for (let e = 0; e < heads; e++) {
      for (let s = 0; s < 3; s++) {
        const row = s * heads + e;
        headsIn[((s * count + cell) * heads + e) * n + t] = token < 0
          ? -1 - row
          : token * 3 * heads + row;
      }
      if (token >= 0) headsBack[token * heads + e] = (cell * heads + e) * n + t;
    }
  });
  return g.scope("attn", () => {
    const side = 2 * window - 1;
    const table = g.param("relative_position_bias_table", [side * side, heads], TRUNC_NORMAL_002);
    const [weight, bias] = g.scope("qkv", () => [
      g.param("weight", [3 * dim, dim], TRUNC_NORMAL_002),
      g.param("bias", [3 * dim], { kind: "zeros" }),
    ]);
    const qkv = linearOp(x, weight, bias);
    const rows = reshape(qkv, [batch, tokens * 3 * heads, headDim]);
    const fill = reshape(bias, [1, 3 * heads, headDim]);
    const part = count * heads * n;
    const [q, k, v] = permuteAxisParts(
      rows,
      [0, 1, 2].map((s) => headsIn.slice(s * part, (s + 1) * part)),
      1,
      fill,
    ).map((t) => reshape(t, [batch, count, heads, n, headDim]));
    const logits = matmul(q, k, { transB: true, alpha: headDim ** -0.5 });
    const positions = gather(table, g.int64s(relativePositionIndex(window)), 0);
    const positionBias = transpose(reshape(positions, [n, n, heads]), [2, 0, 1]);
    const mask = shift > 0 ? shiftMaskConstants(g, hp, wp, layout) : undefined;
    const probabilities = mask
      ? maskedSoftmax(add(logits, add(positionBias, mask.offsets)), mask.keep)
      : softmax(add(logits, positionBias));
    const mixed = reshape(matmul(probabilities, v), [batch, count * heads * n, headDim]);
    const back = reshape(permuteAxis(mixed, headsBack, 1), [batch, tokens, dim]);
    return linear(g, "proj", back, dim);
  });
}

/**
 * The logit offset the graph adds where the official mask has {@link SHIFT_MASK_VALUE}. The
 * weights of those pairs are set to 0 after the softmax ({@link maskedSoftmax}), so the offset
 * only keeps them out of the normalisation, where e^−60 ≈ 1e-26, like the official e^−100, is far
 * below float32 resolution. Unlike −100 it leaves the softmax's weights normal numbers:
 * onnxruntime's CPU softmax takes no exponent below e^−88, which divided by the row's sum is
 * subnormal, and products that read subnormal numbers are many times slower.
 */
const DROPPED_LOGIT_OFFSET = -60;

/** A shift mask as the graph uses it: logit offsets and where they are 0, both [nW, 1, N, N]. */
interface ShiftMaskConstants {
  /** float32: 0 for the pairs kept, {@link DROPPED_LOGIT_OFFSET} for the others. */
  readonly offsets: Tensor;
  /** bool: whether the pair is kept. */
  readonly keep: Tensor;
}

const shiftMasks = new WeakMap<Graph, Map<string, ShiftMaskConstants>>();

/**
 * The {@link shiftedWindowMask} as constants [nW, 1, N, N], one pair per graph and layout: the
 * bool mask of the token pairs it keeps (offset 0), with which the attention sets the weights of
 * the others to exactly 0, and the float32 logit offsets (0 or {@link DROPPED_LOGIT_OFFSET}).
 */
function shiftMaskConstants(
  g: Graph,
  hp: number,
  wp: number,
  layout: WindowLayout,
): ShiftMaskConstants {
  const key = `${hp}x${wp}:${layout.window}:${layout.shift}`;
  const cache = shiftMasks.get(g) ?? new Map<string, ShiftMaskConstants>();
  shiftMasks.set(g, cache);
  let mask = cache.get(key);
  if (!mask) {
    const n = layout.window * layout.window;
    const shape = [(hp * wp) / n, 1, n, n];
    const keep = shiftedWindowMask(hp, wp, layout).map((v) => v === 0 ? 1 : 0);
    mask = {
      offsets: g.constant(keep.map((k) => k ? 0 : DROPPED_LOGIT_OFFSET), "float32", shape),
      keep: g.constant(keep, "bool", shape),
    };
    cache.set(key, mask);
  }
  return mask;
}
