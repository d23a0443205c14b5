/**
 * The standalone ONNX backbone: the ViT or the Swin as an inference model that any onnxruntime
 * runs (Python, C++, web), with the weights baked in as initializers under their official names
 * (`backbone.*`), recorded from the models' own definitions with standard ONNX operators only.
 *
 * - Input `images` float32 [batch, 3, height, width], normalised with the ImageNet mean and std.
 *   The ViT takes any batch and any height and width that are multiples of the patch size p: the
 *   position embedding is interpolated at run time as in training (the official
 *   `interpolate_pos_encoding`), and an image whose height or width is not a multiple of p is
 *   refused by onnxruntime with an error that names the node scope
 *   `height_and_width_must_be_multiples_of_<p>` (an ONNX graph cannot raise a message of its own).
 *   The Swin takes any batch at the one square image size it was written for (any multiple of 4;
 *   by default the size its windows are laid out for): its window partition, shift and padding
 *   are constant gathers computed for that size.
 * - Outputs, after the final norm: `cls_token` [batch, D] (the ViT's CLS token, the Swin's
 *   average-pooled last-stage token) and `patch_tokens` [batch, patches, D] (the ViT's patches,
 *   (height/p)·(width/p); the Swin's last-stage tokens; row-major), and for the ViT optionally the
 *   last block's softmax `attention` [batch, heads, tokens, tokens] (tokens = 1 + patches, CLS
 *   first).
 *
 * {@link checkOnnxBackbone} runs a written model with onnxruntime on the CPU or the GPU and compares
 * it with our own forward.
 *
 * @module
 */

import * as ort from "onnxruntime-node";
import { isSymbolic, symbolicDim } from "../graph/dim.ts";
import { Graph } from "../graph/graph.ts";
import { writeOnnxModel } from "../graph/onnx.ts";
import { reshape, slice } from "../graph/shape.ts";
import { formatShape, shapeSize, type Tensor } from "../graph/tensor.ts";
import { IMAGENET_MEAN, IMAGENET_STD } from "../data/augment.ts";
import { type BackboneConfig, backboneTokens, backboneWidth, isSwin } from "../models/backbone.ts";
import { SWIN_PATCH_SIZE } from "../models/swin.ts";
import { vit } from "../models/vit.ts";
import { prepareCuda } from "../runtime/cuda_libraries.ts";
import type { NamedTensor } from "../runtime/named_tensor.ts";
import { Rng } from "../runtime/rng.ts";
import { CompiledGraph, type ExecutionProvider, ortBindingDir } from "../runtime/session.ts";

/** Options of {@link buildOnnxBackbone} and {@link writeOnnxBackbone}. */
export interface OnnxBackboneOptions {
  /** Also output the last block's attention probabilities as `attention` (ViT only). */
  readonly withAttention?: boolean;
  /**
   * Swin only: the side in pixels of the square images the model takes, a multiple of 4
   * (default the size its windows are laid out for, `imgSize`).
   */
  readonly imageSize?: number;
}

/**
 * The names of the symbolic axes of the model's input and outputs (ONNX `dim_param` names); the
 * Swin's height, width and patches are fixed numbers instead.
 */
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

/**
 * Records the inference backbone: images [batch, 3, height, width] (the ViT: any batch and size;
 * the Swin: any batch at the size of {@link OnnxBackboneOptions.imageSize}). Parameters are
 * declared as `backbone.<official key>`; bake them in when writing.
 */
export function buildOnnxBackbone(
  config: BackboneConfig,
  options: OnnxBackboneOptions = {},
): Graph {
  const g = new Graph("ibot_backbone", { standardOpsOnly: true });
  const batch = symbolicDim("batch");
  let tokens: Tensor;
  let lastAttention: Tensor | undefined;
  if (isSwin(config)) {
    if (options.withAttention) {
      throw new Error("the Swin backbone has no single attention map to output (ViT only)");
    }
    const size = options.imageSize ?? config.imgSize;
    if (!Number.isInteger(size) || size < SWIN_PATCH_SIZE || size % SWIN_PATCH_SIZE !== 0) {
      throw new Error(`the Swin image size ${size} must be a positive multiple of 4`);
    }
    const images = g.input("images", "float32", [batch, 3, size, size]);
    tokens = backboneTokens(g, config, false, { images });
  } else {
    if (options.imageSize !== undefined) {
      throw new Error("the ViT backbone takes any image size; an image size is for the Swin");
    }
    const [height, width] = ["height", "width"].map(symbolicDim);
    const images = g.input("images", "float32", [batch, 3, height, width]);
    ({ tokens, lastAttention } = vit(g, { ...config, maskedImModeling: false }, { images }));
  }
  const [, count, dim] = tokens.dims;
  g.output("cls_token", reshape(slice(tokens, [0], [1], [1]), [batch, dim]));
  g.output("patch_tokens", slice(tokens, [1], [count], [1]));
  if (lastAttention && options.withAttention) g.output("attention", lastAttention);
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
  const initializers = backboneInitializers(graph, weights);
  const values = [...graph.inputs, ...graph.outputs];
  const axisNames = Object.fromEntries(
    values.map((value) => {
      const axes = Object.entries(ONNX_BACKBONE_AXES[value.name] ?? {});
      return [value.name, Object.fromEntries(axes.filter(([a]) => isSymbolic(value.dims[+a])))];
    }),
  );
  await writeOnnxModel(graph, path, { initializers, axisNames, docString: docString(config) });
  const signature = values.map((value) => {
    const dims = value.dims.map((d, axis) =>
      isSymbolic(d) ? axisNames[value.name]?.[axis] ?? String(d) : d
    );
    return `${value.name} ${value.dtype} [${dims.join(", ")}]`;
  });
  return {
    bytes: (await Deno.stat(path)).size,
    parameters: graph.params.reduce((n, param) => n + shapeSize(param.shape), 0),
    signature,
  };
}

/** Options of {@link checkOnnxBackbone}. */
export interface OnnxBackboneCheckOptions {
  /** Where onnxruntime runs the model file (default `cpu`); our forward always runs on the CPU. */
  readonly device?: ExecutionProvider;
  /** Images in the batch (default 2). */
  readonly batch?: number;
  /** Seed of the random images (default 0). */
  readonly seed?: number;
}

/** What {@link checkOnnxBackbone} measured. */
export interface OnnxBackboneCheck {
  /**
   * Images run: [batch, 3, size, size], size the model's own for a Swin, the size its position
   * embedding is laid out for for a ViT.
   */
  readonly shape: readonly number[];
  /** The largest |Δ| between the model's cls_token and patch_tokens and our forward's. */
  readonly maxDifference: number;
  /** The largest |value| of our forward's tokens, the scale the difference is judged against. */
  readonly scale: number;
}

/**
 * The largest difference allowed by {@link checkOnnxBackbone}, relative to the tokens' scale:
 * loose enough for the GPU's TF32 matrix products, tight enough to catch a wrong weight.
 */
export const ONNX_BACKBONE_TOLERANCE = 1e-2;

/**
 * Runs the model file at `path` (written by {@link writeOnnxBackbone} from `config` and
 * `weights`) with onnxruntime on `options.device`, on a batch of random normal images at the
 * size the Swin model takes or the ViT's position embedding is laid out for, and compares its
 * `cls_token` and `patch_tokens` with our forward of the same weights on the CPU. Throws one
 * sentence when onnxruntime cannot run it there or when they differ by more than
 * {@link ONNX_BACKBONE_TOLERANCE} of the tokens' scale.
 */
export async function checkOnnxBackbone(
  path: string,
  config: BackboneConfig,
  weights: ReadonlyMap<string, NamedTensor>,
  options: OnnxBackboneCheckOptions = {},
): Promise<OnnxBackboneCheck> {
  const device = options.device ?? "cpu";
  const batch = options.batch ?? 2;
  if (device === "cuda") prepareCuda(ortBindingDir(), ort.env.versions.common);
  const session = await ort.InferenceSession.create(path, { executionProviders: [device] });
  let out: ort.InferenceSession.ReturnType;
  let shape: number[];
  let expected: Float32Array;
  try {
    const input = session.inputMetadata[0];
    const height = input.isTensor ? input.shape[2] : undefined;
    const size = typeof height === "number" ? height : config.imgSize;
    const rng = new Rng(options.seed ?? 0);
    const images = Float32Array.from({ length: batch * 3 * size * size }, () => rng.normal());
    shape = [batch, 3, size, size];
    expected = await referenceTokens(config, weights, images, shape);
    out = await session.run({ images: new ort.Tensor("float32", images, shape) });
  } finally {
    await session.release();
  }
  const cls = out.cls_token.data as Float32Array;
  const patches = out.patch_tokens.data as Float32Array;
  const dim = backboneWidth(config);
  const tokens = expected.length / (batch * dim);
  let maxDifference = 0;
  let scale = 0;
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < tokens; t++) {
      for (let d = 0; d < dim; d++) {
        const want = expected[(b * tokens + t) * dim + d];
        const got = t === 0 ? cls[b * dim + d] : patches[(b * (tokens - 1) + t - 1) * dim + d];
        maxDifference = Math.max(maxDifference, Math.abs(got - want));
        scale = Math.max(scale, Math.abs(want));
      }
    }
  }
  if (!(maxDifference <= ONNX_BACKBONE_TOLERANCE * scale)) {
    throw new Error(
      `${path} run by onnxruntime on ${device} differs from our forward by up to ` +
        `${maxDifference.toPrecision(3)} on tokens of scale ${scale.toPrecision(3)}`,
    );
  }
  return { shape, maxDifference, scale };
}

/** Our forward's final-normed tokens [batch, 1 + N, D] of `images`, on the CPU. */
async function referenceTokens(
  config: BackboneConfig,
  weights: ReadonlyMap<string, NamedTensor>,
  images: Float32Array,
  shape: readonly number[],
): Promise<Float32Array> {
  const g = new Graph("ibot_backbone_reference");
  const input = g.input("images", "float32", shape);
  g.output("tokens", backboneTokens(g, config, false, { images: input }));
  const session = await CompiledGraph.create(g, { initializers: backboneInitializers(g, weights) });
  try {
    const out = await session.run({ images });
    return Float32Array.from(out.tokens as Float32Array);
  } finally {
    await session.release();
  }
}

/**
 * The values of `graph`'s parameters (`backbone.<key>`) from `weights` (keys without `backbone.`,
 * float64 converted), or one sentence naming a missing or misshapen weight.
 */
function backboneInitializers(
  graph: Graph,
  weights: ReadonlyMap<string, NamedTensor>,
): Map<string, Float32Array> {
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
  return initializers;
}

function docString(config: BackboneConfig): string {
  const format = (values: readonly number[]) => `(${values.join(", ")})`;
  const input = `RGB in [0, 1] normalised with mean ${format(IMAGENET_MEAN)} and std ` +
    `${format(IMAGENET_STD)}`;
  if (isSwin(config)) {
    return `iBOT Swin backbone: width ${config.embedDim}, depths ${format(config.depths)}, ` +
      `heads ${format(config.heads)}, window ${config.windowSize}, windows and shifts laid out ` +
      `for ${config.imgSize} px. Input images [batch, 3, height, width], ${input}, at the height ` +
      `and width the input declares. Outputs after the final norm: cls_token [batch, D] (the ` +
      `average of the last-stage tokens), patch_tokens [batch, patches, D] (the last-stage ` +
      `tokens, row-major).`;
  }
  return `iBOT ViT backbone: width ${config.embedDim}, depth ${config.depth}, ${config.heads} heads, ` +
    `patch ${config.patchSize}, position embedding laid out for ${config.imgSize} px. ` +
    `Input images [batch, 3, height, width], ${input}; height and width multiples of ` +
    `${config.patchSize}. Outputs after the final norm: cls_token [batch, D], patch_tokens ` +
    `[batch, patches, D] (row-major patch grid); attention [batch, heads, tokens, tokens] is the ` +
    `last block's softmax, CLS first.`;
}
