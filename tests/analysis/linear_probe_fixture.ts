/**
 * A tiny linear-probed ViT for the occlusion, shuffle and part-wise tests: random backbone
 * weights (16 wide, 2 blocks, 2 heads, 4-pixel patches on 16-pixel images, so 4×4 patches) and a
 * random linear head on the CLS tokens of the last 2 blocks.
 *
 * @module
 */

import type { LoadedVit } from "../../lib/checkpoint/backbone_file.ts";
import type { CombinedModel, LinearHead } from "../../lib/checkpoint/combined_checkpoint.ts";
import { Graph } from "../../lib/graph/graph.ts";
import { vit } from "../../lib/models/vit.ts";
import type { NamedTensor } from "../../lib/runtime/named_tensor.ts";
import { Rng } from "../../lib/runtime/rng.ts";
import { f32, i64 } from "../reference/torch.ts";

/** The tiny ViT's architecture. */
export const TINY_VIT = {
  embedDim: 16,
  depth: 2,
  heads: 2,
  patchSize: 4,
  imgSize: 16,
  mlpRatio: 4,
} as const;

/** Image side of the fixture, pixels. */
export const TINY_SIZE = 16;

/** Classes of the fixture's head. */
export const TINY_CLASSES = 5;

/** A tiny combined model with weights drawn from `seed` (norm weights near 1, others ±0.3). */
export function tinyCombinedModel(seed: number, nLastBlocks = 2): CombinedModel {
  const rng = new Rng(seed);
  const g = new Graph("tiny");
  const images = g.input("images", "float32", [1, 3, TINY_SIZE, TINY_SIZE]);
  vit(g, { ...TINY_VIT, maskedImModeling: false }, { images });
  const weights = new Map<string, NamedTensor>();
  for (const p of g.params) {
    const name = p.name.slice("backbone.".length);
    const base = name.includes("norm") && name.endsWith("weight") ? 1 : 0;
    const data = Float32Array.from(
      { length: p.shape.reduce((a, b) => a * b, 1) },
      () => base + 0.3 * rng.normal(),
    );
    weights.set(name, f32(data, p.shape));
  }
  const backbone: LoadedVit = {
    path: "tiny",
    key: "flat",
    config: TINY_VIT,
    weights,
    head: new Map(),
  };
  const dim = nLastBlocks * TINY_VIT.embedDim;
  const head: LinearHead = {
    weight: Float32Array.from({ length: TINY_CLASSES * dim }, () => rng.normal()),
    bias: Float32Array.from({ length: TINY_CLASSES }, () => rng.normal()),
    classes: TINY_CLASSES,
    dim,
    nLastBlocks,
    avgpool: 0,
  };
  return { backbone, head };
}

/** `count` random normalised-looking images [count, 3, 16, 16]. */
export function tinyImages(seed: number, count: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: count * 3 * TINY_SIZE * TINY_SIZE }, () => rng.normal());
}

/** The inputs `tests/reference/occlusion_torch.py` reads for the fixture's model. */
export function torchInputs(
  model: CombinedModel,
  images: Float32Array,
  count: number,
): Record<string, NamedTensor> {
  const inputs: Record<string, NamedTensor> = {
    patch_size: i64(TINY_VIT.patchSize),
    depth: i64(TINY_VIT.depth),
    heads: i64(TINY_VIT.heads),
    img_size: i64(TINY_VIT.imgSize),
    n_last_blocks: i64(model.head.nLastBlocks),
    "linear.weight": f32(model.head.weight, [model.head.classes, model.head.dim]),
    "linear.bias": f32(model.head.bias, [model.head.classes]),
    images: f32(images, [count, 3, TINY_SIZE, TINY_SIZE]),
  };
  for (const [name, tensor] of model.backbone.weights) inputs[name] = tensor;
  return inputs;
}
