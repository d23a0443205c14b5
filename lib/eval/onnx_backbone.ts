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
 * The model is the ViT of `lib/models/vit.ts`, recorded with symbolic batch, height and width and
 * standard ONNX operators only: the position embedding is interpolated at run time as in
 * training (the official `interpolate_pos_encoding`), and an image whose height or width is not a
 * multiple of the patch size is refused by onnxruntime with an error that names the node scope
 * `height_and_width_must_be_multiples_of_<p>` (an ONNX graph cannot raise a message of its own).
 *
 * @module
 */

import { isSymbolic, symbolicDim } from "../graph/dim.ts";
import { Graph } from "../graph/graph.ts";
import { writeOnnxModel } from "../graph/onnx.ts";
import { reshape, slice } from "../graph/shape.ts";
import { formatShape, shapeSize } from "../graph/tensor.ts";
import { IMAGENET_MEAN, IMAGENET_STD } from "../data/augment.ts";
import { vit } from "../models/vit.ts";
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

/**
 * Records the inference backbone for any batch and image size: images [batch, 3, height, width].
 * Parameters are declared as `backbone.<official key>`; bake them in when writing.
 */
export function buildOnnxBackbone(
  config: BackboneConfig,
  options: OnnxBackboneOptions = {},
): Graph {
  const g = new Graph("ibot_backbone", { standardOpsOnly: true });
  const [batch, height, width] = ["batch", "height", "width"].map(symbolicDim);
  const images = g.input("images", "float32", [batch, 3, height, width]);
  const { tokens, lastAttention } = vit(g, { ...config, maskedImModeling: false }, { images });
  const [, count, dim] = tokens.dims;
  g.output("cls_token", reshape(slice(tokens, [0], [1], [1]), [batch, dim]));
  g.output("patch_tokens", slice(tokens, [1], [count], [1]));
  if (options.withAttention) g.output("attention", lastAttention);
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
  const values = [...graph.inputs, ...graph.outputs];
  const axisNames = Object.fromEntries(
    Object.entries(ONNX_BACKBONE_AXES).filter(([name]) => values.some((v) => v.name === name)),
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
