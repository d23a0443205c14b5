/**
 * The standalone ONNX backbone: the ViT as an inference model that any onnxruntime runs (Python,
 * C++, web), with the weights baked in as initializers under their official names (`backbone.*`).
 *
 * - Input `images` float32 [batch, 3, height, width], normalised with the ImageNet mean and std,
 *   at any batch and any height and width that are multiples of the patch size p.
 * - Outputs, after the final norm: `cls_token` [batch, D] and `patch_tokens` [batch, patches, D]
 *   (patches = (height/p)·(width/p), row-major), and optionally the last block's softmax
 *   `attention` [batch, heads, tokens, tokens] (tokens = 1 + patches, CLS first).
 *
 * The graph is recorded at one trace size, whose static shapes check the wiring, but every node is
 * written to work at any size: reshape targets hold only 0 (keep) and -1 (infer) or are computed
 * from the input's `Shape`, the CLS token is expanded to the batch at run time, and the position
 * embedding is resized with scales computed at run time. It follows `positionEmbedding` of
 * `lib/models/vit.ts` (the official `interpolate_pos_encoding`): the stored table when the patch
 * grid has its size, else its patch part resized bicubically (A = −0.75, half-pixel, taps clamped
 * to the border) with scales ((h + 0.1)/grid, (w + 0.1)/grid). ONNX `Resize` in cubic mode does
 * exactly that, and at scale 1 it returns the table unchanged.
 *
 * An image whose height or width is not a multiple of the patch size is refused by onnxruntime: the
 * reshape into patches fails, naming the node `…/height_and_width_must_be_multiples_of_<p>/…`.
 * (An ONNX graph cannot raise an error message of its own.)
 *
 * @module
 */

import { Graph } from "../graph/graph.ts";
import { matmul } from "../graph/linalg.ts";
import { add, cast, div, equal, logicalAnd, mul, where } from "../graph/math.ts";
import { gelu, softmax } from "../graph/nn.ts";
import { writeOnnxModel } from "../graph/onnx.ts";
import { concat, gather, reshape, slice, split, transpose } from "../graph/shape.ts";
import { formatShape, shapeSize, type Tensor } from "../graph/tensor.ts";
import { IMAGENET_MEAN, IMAGENET_STD } from "../data/augment.ts";
import { layerNorm, TRUNC_NORMAL_002 } from "../models/layers.ts";
import type { NamedTensor } from "../runtime/named_tensor.ts";
import type { BackboneConfig } from "../checkpoint/backbone_file.ts";

/** Options of {@link buildOnnxBackbone} and {@link writeOnnxBackbone}. */
export interface OnnxBackboneOptions {
  /** Also output the last block's attention probabilities as `attention`. */
  readonly withAttention?: boolean;
}

/** The symbolic axes of the model's input and outputs (ONNX `dim_param` names). */
export const ONNX_BACKBONE_AXES: Readonly<Record<string, Readonly<Record<number, string>>>> = {
  images: { 0: "batch", 2: "height", 3: "width" },
  cls_token: { 0: "batch" },
  patch_tokens: { 0: "batch", 1: "patches" },
  attention: { 0: "batch", 2: "tokens", 3: "tokens" },
};

/** What {@link writeOnnxBackbone} wrote. */
export interface OnnxBackboneSummary {
  /** Size of the model file in bytes. */
  readonly bytes: number;
  /** Number of weight values baked in. */
  readonly parameters: number;
  /** The input and outputs, e.g. `images float32 [batch, 3, height, width]`. */
  readonly signature: readonly string[];
}

/** Batch of the trace: not 1, so that a batch axis mistaken for a broadcast one shows. */
const TRACE_BATCH = 2;
const EPS = 1e-6;

/**
 * Records the inference backbone, traced at batch 2 and the size the position embedding is laid
 * out for. Parameters are declared as `backbone.<official key>`; bake them in when writing.
 */
export function buildOnnxBackbone(
  config: BackboneConfig,
  options: OnnxBackboneOptions = {},
): Graph {
  const { embedDim: dim, depth, heads, patchSize: p, imgSize } = config;
  const grid = imgSize / p;
  if (!Number.isInteger(grid)) {
    throw new Error(`image size ${imgSize} is not a multiple of the patch size ${p}`);
  }
  const g = new Graph("ibot_backbone");
  const images = g.input("images", "float32", [TRACE_BATCH, 3, imgSize, imgSize]);
  const { tokens, attention } = g.scope("backbone", () => {
    const clsToken = g.param("cls_token", [1, 1, dim], TRUNC_NORMAL_002);
    const posEmbed = g.param("pos_embed", [1, 1 + grid * grid, dim], TRUNC_NORMAL_002);
    // [h, w]: the patch grid of this run.
    const patchGrid = div(shapeOf(images, 2, 4), p);
    const patches = patchEmbedding(g, images, patchGrid, p, dim);
    const cls = g.emit1(
      "Expand",
      [clsToken, concat([shapeOf(images, 0, 1), g.int64s([1, 1])], 0)],
      "float32",
      [TRACE_BATCH, 1, dim],
    );
    let x = add(concat([cls, patches], 1), positionEmbedding(posEmbed, grid, patchGrid));
    let attention: Tensor | undefined;
    for (let i = 0; i < depth; i++) {
      const block = g.scope(`blocks.${i}`, () => transformerBlock(g, x, heads, config.mlpRatio));
      x = block.out;
      attention = block.attention;
    }
    return { tokens: layerNorm(g, "norm", x, EPS), attention: attention! };
  });
  g.output("cls_token", gather(tokens, g.constant([0], "int64", []), 1));
  const toEnd = g.int64s([Number.MAX_SAFE_INTEGER]);
  const [batch, count] = tokens.shape;
  g.output(
    "patch_tokens",
    g.emit1("Slice", [tokens, g.int64s([1]), toEnd, g.int64s([1])], "float32", [
      batch,
      count - 1,
      dim,
    ]),
  );
  if (options.withAttention) g.output("attention", attention);
  return g;
}

/**
 * Writes the backbone with `weights` (official keys without `backbone.`, as a loaded backbone's
 * `weights`; float64 tensors are converted) baked in, atomically.
 */
export async function writeOnnxBackbone(
  path: string,
  config: BackboneConfig,
  weights: ReadonlyMap<string, NamedTensor>,
  options: OnnxBackboneOptions = {},
): Promise<OnnxBackboneSummary> {
  const graph = buildOnnxBackbone(config, options);
  const initializers = new Map<string, Float32Array>();
  for (const param of graph.params) {
    const key = param.name.slice("backbone.".length);
    const tensor = weights.get(key);
    if (!tensor || formatShape(tensor.shape) !== formatShape(param.shape)) {
      throw new Error(`the backbone needs ${key} of shape ${formatShape(param.shape)}`);
    }
    const data = tensor.data;
    initializers.set(
      param.name,
      data instanceof Float32Array ? data : Float32Array.from(data as Float64Array),
    );
  }
  const outputs = new Set(graph.outputs.map((o) => o.name));
  const dynamicAxes = Object.fromEntries(
    Object.entries(ONNX_BACKBONE_AXES).filter(([name]) => name === "images" || outputs.has(name)),
  );
  await writeOnnxModel(graph, path, {
    initializers,
    dynamicAxes,
    docString: docString(config),
  });
  const signature = [...graph.inputs, ...graph.outputs].map((value) => {
    const dims = value.shape.map((d, axis) => dynamicAxes[value.name][axis] ?? d);
    return `${value.name} ${value.dtype} [${dims.join(", ")}]`;
  });
  return {
    bytes: (await Deno.stat(path)).size,
    parameters: graph.params.reduce((n, param) => n + shapeSize(param.shape), 0),
    signature,
  };
}

function docString(config: BackboneConfig): string {
  const format = (values: readonly number[]) => `(${values.join(", ")})`;
  return `iBOT ViT backbone: width ${config.embedDim}, depth ${config.depth}, ${config.heads} heads, ` +
    `patch ${config.patchSize}, position embedding laid out for ${config.imgSize} px. ` +
    `Input images [batch, 3, height, width], RGB in [0, 1] normalised with mean ` +
    `${format(IMAGENET_MEAN)} and std ${format(IMAGENET_STD)}; height and width multiples of ` +
    `${config.patchSize}. Outputs after the final norm: cls_token [batch, D], patch_tokens ` +
    `[batch, patches, D] (row-major patch grid); attention [batch, heads, tokens, tokens] is the ` +
    `last block's softmax, CLS first.`;
}

/** The int64 sizes of axes [start, end) of `x`, read at run time. */
function shapeOf(x: Tensor, start: number, end: number): Tensor {
  return x.graph.emit1("Shape", [x], "int64", [end - start], {
    start: { i: start },
    end: { i: end },
  });
}

/**
 * Reshape to a target of 0 (keep the input's size on that axis) and -1 (infer) entries and fixed
 * sizes only, so that it works whatever the dynamic axes are.
 */
function reshapeAnySize(x: Tensor, target: readonly number[]): Tensor {
  const shape = target.map((d, i) => (d === 0 ? x.shape[i] : d));
  const unknown = shape.indexOf(-1);
  if (unknown >= 0) shape[unknown] = x.size / shapeSize(shape.filter((d) => d !== -1));
  return x.graph.emit1("Reshape", [x, x.graph.int64s(target)], x.dtype, shape);
}

/**
 * The official `patch_embed.proj` convolution (kernel = stride = p) as a product of patch rows:
 * images [B, 3, H, W] → [B, N, D]. Splitting H and W into (H/p, p) and (W/p, p) fails when they
 * are not multiples of p, where a strided convolution would silently drop the remainder.
 */
function patchEmbedding(g: Graph, images: Tensor, patchGrid: Tensor, p: number, dim: number) {
  const [batch, channels, height, width] = images.shape;
  const rowWidth = channels * p * p;
  const grid = g.scope(`height_and_width_must_be_multiples_of_${p}`, () => {
    const [h, w] = split(patchGrid, [1, 1], 0);
    const target = concat([g.int64s([0, channels]), h, g.int64s([p]), w, g.int64s([p])], 0);
    return g.emit1("Reshape", [images, target], "float32", [
      batch,
      channels,
      height / p,
      p,
      width / p,
      p,
    ]);
  });
  // [B, h, w, C, p, p] → [B, N, C·p·p]: rows ordered like the convolution's weight.
  const rows = reshapeAnySize(transpose(grid, [0, 2, 4, 1, 3, 5]), [0, -1, rowWidth]);
  return g.scope("patch_embed.proj", () => {
    const weight = g.param("weight", [dim, channels, p, p], TRUNC_NORMAL_002);
    const bias = g.param("bias", [dim], { kind: "zeros" });
    return add(matmul(rows, transpose(reshape(weight, [dim, rowWidth]), [1, 0])), bias);
  });
}

/**
 * [1, 1 + h·w, D]: the stored table when the grid is grid×grid, else its patch part resized with
 * scales ((h + 0.1)/grid, (w + 0.1)/grid), both decided at run time from `patchGrid` = [h, w].
 */
function positionEmbedding(posEmbed: Tensor, grid: number, patchGrid: Tensor): Tensor {
  const g = posEmbed.graph;
  const dim = posEmbed.shape[2];
  const clsPos = slice(posEmbed, [0], [1], [1]);
  const table = transpose(
    reshape(slice(posEmbed, [1], [1 + grid * grid], [1]), [1, grid, grid, dim]),
    [0, 3, 1, 2],
  );
  const [sameH, sameW] = split(equal(patchGrid, g.int64s([grid, grid])), [1, 1], 0);
  const interpolated = div(add(cast(patchGrid, "float32"), 0.1), grid);
  const scales = concat([
    g.constant([1, 1], "float32", [2]),
    where(logicalAnd(sameH, sameW), 1, interpolated),
  ], 0);
  // Traced at the stored grid, so the trace shape is the table's.
  const resized = g.emit1("Resize", [table, null, scales], "float32", table.shape, {
    mode: { s: "cubic" },
    cubic_coeff_a: { f: -0.75 },
    coordinate_transformation_mode: { s: "half_pixel" },
  });
  const patchPos = transpose(reshapeAnySize(resized, [0, 0, -1]), [0, 2, 1]);
  return concat([clsPos, patchPos], 1);
}

/** The official pre-norm block (`norm1`, `attn`, `norm2`, `mlp`) on x [B, T, D]. */
function transformerBlock(g: Graph, x: Tensor, heads: number, mlpRatio = 4) {
  const dim = x.shape[2];
  // Arguments are computed outside the scopes: norm1 and norm2 sit beside attn and mlp.
  const normed1 = layerNorm(g, "norm1", x, EPS);
  const attention = g.scope("attn", () => selfAttention(g, normed1, heads));
  const h = add(x, attention.out);
  const normed2 = layerNorm(g, "norm2", h, EPS);
  const m = g.scope(
    "mlp",
    () => linear(g, "fc2", gelu(linear(g, "fc1", normed2, mlpRatio * dim)), dim),
  );
  return { out: add(h, m), attention: attention.probabilities };
}

/** Multi-head self-attention on x [B, T, D]: `qkv`, softmax(q·kᵀ·hd^−½)·v, `proj`. */
function selfAttention(g: Graph, x: Tensor, heads: number) {
  const dim = x.shape[2];
  const headDim = dim / heads;
  const qkv = reshapeAnySize(linear(g, "qkv", x, 3 * dim), [0, 0, 3, heads, headDim]);
  const perHead = transpose(qkv, [2, 0, 3, 1, 4]); // [3, B, heads, T, hd]
  const [q, k, v] = [0, 1, 2].map((i) => gather(perHead, g.constant([i], "int64", []), 0));
  const probabilities = softmax(mul(matmul(q, transpose(k, [0, 1, 3, 2])), headDim ** -0.5));
  const mixed = reshapeAnySize(transpose(matmul(probabilities, v), [0, 2, 1, 3]), [0, 0, -1]);
  return { out: linear(g, "proj", mixed, dim), probabilities };
}

/** `nn.Linear` named `<scope>.<name>` on x [B, T, in] → [B, T, out], as MatMul and Add. */
function linear(g: Graph, name: string, x: Tensor, out: number): Tensor {
  const inFeatures = x.shape[x.rank - 1];
  return g.scope(name, () => {
    const weight = g.param("weight", [out, inFeatures], TRUNC_NORMAL_002);
    const bias = g.param("bias", [out], { kind: "zeros" });
    return add(matmul(x, transpose(weight, [1, 0])), bias);
  });
}
