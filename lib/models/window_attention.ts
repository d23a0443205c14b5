/**
 * The shifted-window multi-head self-attention of the official Swin Transformer
 * (`models/swin_transformer.py`: `WindowAttention` and the attention half of
 * `SwinTransformerBlock`): the token grid is zero-padded right and bottom to a multiple of the
 * window, cyclically shifted, cut into non-overlapping windows, and each window attends within
 * itself with a learned relative position bias and, when shifted, a mask that keeps regions that
 * were not neighbours apart; then everything is undone in reverse order.
 *
 * Shapes are static.
 *
 * @module
 */

import type { Graph } from "../graph/graph.ts";
import { matmul } from "../graph/linalg.ts";
import { add } from "../graph/math.ts";
import { softmax } from "../graph/nn.ts";
import { gather, pad, reshape, roll, slice, split, transpose } from "../graph/shape.ts";
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
 * Window attention of one Swin block on a token grid x [B, H, W, C] → [B, H, W, C], with
 * parameters `attn.relative_position_bias_table` [(2ws − 1)², heads] (trunc normal 0.02),
 * `attn.qkv` (C → 3C, [q | k | v] head-major) and `attn.proj` (C → C) under the current scope.
 * Any H and W: the grid is zero-padded to multiples of the window and the padding cropped after
 * (padded tokens take part as keys and values, as officially).
 */
export function shiftedWindowAttention(
  g: Graph,
  x: Tensor,
  heads: number,
  layout: WindowLayout,
): Tensor {
  const { window, shift } = layout;
  const [batch, h, w] = x.shape;
  if (!(Number.isInteger(window) && window > 0 && Number.isInteger(shift))) {
    g.fail("shiftedWindowAttention", `window ${window} and shift ${shift} must be integers`);
  }
  if (shift < 0 || shift >= window) {
    g.fail("shiftedWindowAttention", `shift ${shift} must lie in [0, ${window})`);
  }
  const [hp, wp] = [Math.ceil(h / window) * window, Math.ceil(w / window) * window];
  let grid = pad(x, [0, 0, 0, 0, 0, hp - h, wp - w, 0]);
  if (shift > 0) grid = roll(roll(grid, -shift, 1), -shift, 2);
  const windows = windowAttention(
    g,
    partition(grid, window),
    heads,
    window,
    shift > 0 ? shiftMaskConstant(g, hp, wp, layout) : undefined,
  );
  grid = unpartition(windows, batch, hp, wp);
  if (shift > 0) grid = roll(roll(grid, shift, 1), shift, 2);
  return hp === h && wp === w ? grid : slice(grid, [0, 0], [h, w], [1, 2]);
}

/**
 * Multi-head attention inside each window, named `attn.*`: windows [B, nW, N, C] (N = ws²) →
 * [B, nW, N, C]. Logits q·kᵀ/√hd plus the relative position bias, plus `mask` [nW, N, N] when
 * given.
 */
function windowAttention(
  g: Graph,
  windows: Tensor,
  heads: number,
  window: number,
  mask: Tensor | undefined,
): Tensor {
  const [batch, count, n, dim] = windows.shape;
  if (dim % heads !== 0) {
    g.fail("windowAttention", `width ${dim} is not a multiple of ${heads} heads`);
  }
  const headDim = dim / heads;
  return g.scope("attn", () => {
    const side = 2 * window - 1;
    const table = g.param("relative_position_bias_table", [side * side, heads], TRUNC_NORMAL_002);
    const qkv = linear(g, "qkv", reshape(windows, [batch * count * n, dim]), 3 * dim);
    const perHead = transpose(
      reshape(qkv, [batch, count, n, 3, heads, headDim]),
      [3, 0, 1, 4, 2, 5],
    );
    const [q, k, v] = split(perHead, [1, 1, 1], 0).map((t) =>
      reshape(t, [batch, count, heads, n, headDim])
    );
    const logits = matmul(q, k, { transB: true, alpha: headDim ** -0.5 });
    const positions = gather(table, g.int64s(relativePositionIndex(window)), 0);
    const bias = transpose(reshape(positions, [n, n, heads]), [2, 0, 1]);
    const probabilities = softmax(
      add(logits, mask ? add(bias, reshape(mask, [count, 1, n, n])) : bias),
    );
    const mixed = transpose(matmul(probabilities, v), [0, 1, 3, 2, 4]);
    const out = linear(g, "proj", reshape(mixed, [batch * count * n, dim]), dim);
    return reshape(out, [batch, count, n, dim]);
  });
}

/** Cuts x [B, Hp, Wp, C] into windows [B, nW, ws², C], windows and tokens row-major. */
function partition(x: Tensor, window: number): Tensor {
  const [batch, hp, wp, dim] = x.shape;
  const [rows, columns] = [hp / window, wp / window];
  const blocks = reshape(x, [batch, rows, window, columns, window, dim]);
  return reshape(transpose(blocks, [0, 1, 3, 2, 4, 5]), [
    batch,
    rows * columns,
    window * window,
    dim,
  ]);
}

/** The inverse of {@link partition}: windows [B, nW, ws², C] → grid [B, Hp, Wp, C]. */
function unpartition(windows: Tensor, batch: number, hp: number, wp: number): Tensor {
  const [, , n, dim] = windows.shape;
  const window = Math.sqrt(n);
  const blocks = reshape(windows, [batch, hp / window, wp / window, window, window, dim]);
  return reshape(transpose(blocks, [0, 1, 3, 2, 4, 5]), [batch, hp, wp, dim]);
}

const shiftMasks = new WeakMap<Graph, Map<string, Tensor>>();

/** The {@link shiftedWindowMask} as a float32 constant [nW, N, N], one per graph and layout. */
function shiftMaskConstant(g: Graph, hp: number, wp: number, layout: WindowLayout): Tensor {
  const key = `${hp}x${wp}:${layout.window}:${layout.shift}`;
  const cache = shiftMasks.get(g) ?? new Map<string, Tensor>();
  shiftMasks.set(g, cache);
  let mask = cache.get(key);
  if (!mask) {
    const n = layout.window * layout.window;
    const count = (hp * wp) / n;
    mask = g.constant(shiftedWindowMask(hp, wp, layout), "float32", [count, n, n]);
    cache.set(key, mask);
  }
  return mask;
}
